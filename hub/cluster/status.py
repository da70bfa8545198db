"""Each member's status on a compacted topic: what `threatseer cluster status` shows.

Every gateway, scorer and output worker produces its status document (role, name, pid, counts,
the bundle a scorer runs) every ``INTERVAL_S``, keyed ``<role>/<name>``, so the compacted topic
always holds the latest of each and a reader sees the whole cluster without asking anyone.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from confluent_kafka import TopicPartition

from threatseer.hub.cluster.config import ClusterConfig
from threatseer.hub.cluster.kafka import ClusterError, consumer, producer

log = logging.getLogger("threatseer.hub.cluster.status")
INTERVAL_S = 2.0
MAX_STATUS_BYTES = 256 * 1024


class Beacon:
    """Publishes ``collect()`` every INTERVAL_S from its own thread (and once at stop)."""

    def __init__(self, cfg: ClusterConfig, role: str, collect: Callable[[], dict[str, Any]],
                 interval_s: float = INTERVAL_S) -> None:
        self.cfg, self.role, self.collect = cfg, role, collect
        self.key = f"{role}/{cfg.member()}".encode()
        self.interval_s = interval_s
        self._producer = producer(cfg, **{"linger.ms": 0})
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"{role}-status", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _doc(self) -> bytes:
        doc = {"role": self.role, "name": self.cfg.member(), "pid": os.getpid(),
               "updated_at": time.time(), **self.collect()}
        return json.dumps(doc, default=str).encode()[:MAX_STATUS_BYTES]

    def publish(self, stopped: bool = False) -> None:
        try:
            value = self._doc() if not stopped else json.dumps(
                {"role": self.role, "name": self.cfg.member(), "stopped_at": time.time()}
            ).encode()
            self._producer.produce(self.cfg.status_topic, key=self.key, value=value)
            self._producer.poll(0)
        except Exception as exc:  # status must never stop the member
            log.warning("status not published: %s", exc)

    def _run(self) -> None:
        while True:
            self.publish()
            if self._stop.wait(self.interval_s):
                return

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)
        self.publish(stopped=True)
        self._producer.flush(5)


def read_status(cfg: ClusterConfig, timeout: float = 5.0) -> dict[str, dict[str, Any]]:
    """The latest status document of every member (``role/name`` -> document)."""
    c = consumer(cfg, **{"group.id": "threatseer-status-" + uuid.uuid4().hex,
                         "enable.auto.commit": False})
    out: dict[str, dict[str, Any]] = {}
    try:
        c.assign([TopicPartition(cfg.status_topic, 0, 0)])
        deadline = time.monotonic() + timeout
        quiet = 0
        while time.monotonic() < deadline and quiet < 3:
            msgs = c.consume(1000, 0.3)
            quiet = 0 if msgs else quiet + 1
            for m in msgs:
                if m.error() or not m.key():
                    continue
                try:
                    doc = json.loads(m.value())
                except (TypeError, ValueError):
                    continue
                if isinstance(doc, dict):
                    out[m.key().decode(errors="replace")] = doc
    finally:
        c.close()
    return out


def serve_metrics(metrics: Any, cfg: ClusterConfig, role: str) -> Any:
    """Start ``role``'s /metrics server (``cluster.metrics_listen``); None when it is off."""
    listen = cfg.metrics_for(role)
    if not listen:
        return None
    try:
        return metrics.serve(listen)
    except OSError as exc:
        raise ClusterError(f"cluster.metrics_listen.{role}: cannot listen on {listen}: "
                           f"{exc.strerror or exc}") from None


class Member:
    """What every cluster member (gateway, scorer, output worker) runs beside its work: its
    /metrics server, its status :class:`Beacon`, and one loop thread (``_loop``) that returns
    once ``_stop`` is set. A member sets ``ccfg`` and ``metrics`` before :meth:`_member`."""

    ccfg: ClusterConfig
    metrics: Any
    role: str

    def _member(self, role: str) -> None:
        self.role = role
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.beacon = Beacon(self.ccfg, role, self.counters)
        self._http: Any = None

    def counters(self) -> dict[str, Any]:
        raise NotImplementedError

    def _loop(self) -> None:
        raise NotImplementedError

    def _serve(self) -> None:
        """/metrics and the beacon: first thing in ``start``."""
        self._http = serve_metrics(self.metrics, self.ccfg, self.role)
        self.beacon.start()

    def _run_loop(self) -> None:
        """The loop thread: last thing in ``start``."""
        self._thread = threading.Thread(target=self._loop, name=self.role, daemon=True)
        self._thread.start()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _halt(self) -> None:
        """Stop the loop (it finishes its turn), the beacon (a last "stopped" status) and
        /metrics: first thing in ``stop``."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.beacon.stop()
        if self._http is not None:
            self._http.shutdown()
