"""The outputs as the hub sees them: route each scored event to every output that wants it."""

from __future__ import annotations

import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .buffer import EventBuffer
from .config import OutputConfig, check_unique_names
from .events import EventIds, routed
from .metrics import OutputsCollector
from .sinks import make_sink
from .spill import SpillFile
from .worker import OutputWorker


class Outputs:
    """One bounded buffer and worker thread per configured output.

    ``emit`` only routes and enqueues (it blocks only for an output whose overflow policy is
    ``block``); serialising and sending happen in the workers. ``registry``: a
    prometheus_client CollectorRegistry to publish ``threatseer_output_*`` metrics in.
    """

    def __init__(self, configs: list[OutputConfig], registry: Any = None,
                 **sink_extra: dict[str, Any]) -> None:
        check_unique_names(configs)
        for cfg in configs:
            cfg.validate()
        self.configs = configs
        self._ids = EventIds()
        self._workers: list[OutputWorker] = []
        self._sink_extra = sink_extra  # per output name: extra sink arguments (tests: stream)
        self._registry = registry
        self._collector: OutputsCollector | None = None
        self._started = False

    def start(self) -> None:
        if self._started:
            return
        for cfg in self.configs:
            spill = None
            if cfg.overflow == "spill":
                spill = SpillFile(Path(cfg.spill_dir) / f"{cfg.label}.spill",
                                  cfg.spill_max_mb * 1024 * 1024)
            buffer = EventBuffer(cfg.queue_size, cfg.overflow, spill)
            sink = make_sink(cfg, **self._sink_extra.get(cfg.label, {}))
            self._workers.append(OutputWorker(cfg, sink, buffer))
        for worker in self._workers:
            worker.start()
        if self._registry is not None:
            self._collector = OutputsCollector(self.status, self.latencies)
            self._registry.register(self._collector)
        self._started = True

    def attach_metrics(self, registry: Any) -> None:
        """Publish the ``threatseer_output_*`` metrics in ``registry`` from now on (a hub
        reloading its outputs attaches the new ones once the old ones are closed)."""
        self._registry = registry
        if self._started and self._collector is None and registry is not None:
            self._collector = OutputsCollector(self.status)
            registry.register(self._collector)

    def emit(self, event: dict[str, Any]) -> None:
        """Route one scored flat event; gives it an ``event.id`` if it has none."""
        self.emit_all((event,))

    def emit_all(self, events: Iterable[dict[str, Any]]) -> None:
        """:meth:`emit` each of ``events`` (a slice the pipeline scored together: one clock
        reading stamps them all for the delivery latency)."""
        now = time.monotonic()
        ensure, workers = self._ids.ensure, self._workers
        for event in events:
            ensure(event)
            for worker in workers:
                if routed(worker.cfg, event):
                    worker.buffer.put(event, now)

    def close(self, timeout: float = 10.0) -> None:
        """Deliver what is queued within ``timeout`` seconds in total, then stop."""
        deadline = time.monotonic() + timeout
        for worker in self._workers:
            worker.buffer.close()
        for worker in self._workers:
            worker.stop(deadline)
        if self._collector is not None:
            self._registry.unregister(self._collector)
            self._collector = None

    def latencies(self) -> list[tuple[str, str, Any]]:
        """Per output: (name, type, delivery latency histogram snapshot)."""
        return [(w.cfg.label, w.cfg.type, w.latency.snapshot()) for w in self._workers]

    def status(self) -> list[dict[str, Any]]:
        """Per output: name, type, connected, queue_depth, sent, failed, dropped (and more)."""
        if not self._workers:
            return [{"name": c.label, "type": c.type, "connected": False, "queue_depth": 0,
                     "sent": 0, "failed": 0, "dropped": 0, "retries": 0, "spilled": 0,
                     "spill_depth": 0, "last_error": ""} for c in self.configs]
        return [w.status() for w in self._workers]
