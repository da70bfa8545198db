"""Where scored events go: Elasticsearch, Kafka, Logstash, Redis, file, stdout.

The hub pipeline only sees :class:`Outputs`: it calls :meth:`Outputs.emit` for every scored
event and :meth:`Outputs.close` on shutdown. Each configured output has its own bounded queue
and worker, so a slow or dead output never blocks the others or the pipeline.

INTERFACE CONTRACT (used by the hub; keep it stable):
    OutputConfig  - one output's config (a dataclass, loaded by configfile from the hub YAML)
    Outputs(configs, registry=None)
        .start()                      start workers
        .emit(event: dict) -> None    route one scored flat event (never blocks unless the
                                      output's overflow policy is "block")
        .emit_all(events) -> None     the same for a slice of events
        .close(timeout: float = 10)   flush queues and stop workers
        .status() -> list[dict]       per output: name, type, connected, queue_depth, sent,
                                      failed, dropped (plus retries, spilled, spill_depth,
                                      last_error)
    check_unique_names(configs)       raises ValueError("outputs[i].name: ...") on duplicates

Layout: config (keys and validation), events (ids, routing, subject, JSON), buffer + spill
(queue and overflow policies), worker (retry/backoff, counters), sinks/* (one per type),
es_template (ECS mappings), metrics (Prometheus collector), manager (Outputs), cli (es-setup).
"""

from .config import OutputConfig, check_unique_names
from .manager import Outputs

__all__ = ["OutputConfig", "Outputs", "check_unique_names"]
