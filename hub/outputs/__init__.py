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
        .close(timeout: float = 10)   flush queues and stop workers
        .status() -> list[dict]       per output: name, type, connected, queue_depth, sent,
                                      failed, dropped
"""

from __future__ import annotations

import json
import sys
import threading
from dataclasses import dataclass, field
from typing import Any

from threatseer.sensor import ecs


@dataclass
class OutputConfig:
    # elasticsearch, kafka, logstash, redis, file, stdout
    type: str = "stdout"
    # Name in metrics and status; defaults to the type.
    name: str = ""
    # Only events with event.risk_score >= min_score are sent.
    min_score: int = 0
    # Only these event.kind values (empty: all), e.g. ["alert"].
    kinds: list[str] = field(default_factory=list)
    # Only these event.category values (empty: all), e.g. ["process", "network"].
    categories: list[str] = field(default_factory=list)
    # Bounded queue between the pipeline and this output's worker.
    queue_size: int = 10000
    # On a full queue: block, drop-oldest (counted) or spill (to disk).
    overflow: str = "drop-oldest"
    # Type-specific settings (hosts, topic, path, ...).
    options: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> None:
        known = ("elasticsearch", "kafka", "logstash", "redis", "file", "stdout")
        if self.type not in known:
            raise ValueError(f"type: unknown output type {self.type!r} (known: {', '.join(known)})")
        if self.overflow not in ("block", "drop-oldest", "spill"):
            raise ValueError("overflow: must be block, drop-oldest or spill")
        if self.queue_size < 1:
            raise ValueError("queue_size: must be at least 1")


class Outputs:
    """PLACEHOLDER (synchronous stdout/file) until the output workers land; same API."""

    def __init__(self, configs: list[OutputConfig], registry: Any = None) -> None:
        self.configs = configs
        self._lock = threading.Lock()
        self._sent = [0] * len(configs)
        self._files: dict[int, Any] = {}

    def start(self) -> None:
        for i, cfg in enumerate(self.configs):
            if cfg.type == "file":
                self._files[i] = open(cfg.options["path"], "a")  # noqa: SIM115

    def emit(self, event: dict[str, Any]) -> None:
        line = None
        for i, cfg in enumerate(self.configs):
            if event.get("event.risk_score", 0) < cfg.min_score:
                continue
            line = line or json.dumps(ecs.nest(event), default=str)
            with self._lock:
                out = self._files.get(i, sys.stdout)
                out.write(line + "\n")
                self._sent[i] += 1

    def close(self, timeout: float = 10.0) -> None:
        for f in self._files.values():
            f.close()
        sys.stdout.flush()

    def status(self) -> list[dict[str, Any]]:
        return [
            {"name": c.name or c.type, "type": c.type, "connected": True, "queue_depth": 0,
             "sent": self._sent[i], "failed": 0, "dropped": 0}
            for i, c in enumerate(self.configs)
        ]
