"""An output worker: the scored events of the whole cluster, to the configured outputs.

Output workers are their own consumer group on the events topic, reading ``read_committed``:
an output that is slow (Elasticsearch catching up) only makes its worker lag behind, never
the scorers. Each record is a msgpack array of scored flat events (one chunk of one batch);
they go to :class:`Outputs` exactly as the embedded hub's do, and to the cluster-wide PUB tap
(``cluster.tap_endpoint``) when configured.

Position check: every record carries the position of its input (``src``: batches offset and
chunk), and events partition p holds the events of batches partition p in input order. A
record at or before the last position delivered from its partition is a copy: on Kafka that
never happens to a read_committed reader, but a broker that shows aborted transactions'
records (tansu does, docs/cluster.md) would otherwise deliver a batch twice after a scorer
was killed mid-transaction.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import msgspec
import zmq
from confluent_kafka import KafkaError, TopicPartition

from threatseer.hub.cluster.kafka import consumer, ensure_topics, require, take
from threatseer.hub.cluster.scorer import SOURCE
from threatseer.hub.cluster.status import Member
from threatseer.hub.config import HubConfig
from threatseer.hub.metrics import HubMetrics
from threatseer.hub.outputs import Outputs
from threatseer.hub.publish import Publisher

log = logging.getLogger("threatseer.hub.cluster.outputs")
_unpack = msgspec.msgpack.Decoder(list[dict[str, Any]]).decode


def position(headers: list[tuple[str, bytes]] | None) -> tuple[int, int] | None:
    """The ``src`` header's (offset, chunk), or None."""
    for key, value in headers or ():
        if key == SOURCE:
            try:
                off, _, chunk = value.decode().partition(":")
                return int(off), int(chunk)
            except (ValueError, UnicodeDecodeError):
                return None
    return None


class EventsReader(Member):
    def __init__(self, cfg: HubConfig, outputs: Outputs | None = None,
                 group: str | None = None) -> None:
        require(cfg.cluster)
        self.cfg, self.ccfg = cfg, cfg.cluster
        ensure_topics(self.ccfg)
        self.metrics = HubMetrics()
        self.outputs = outputs if outputs is not None else Outputs(
            cfg.outputs, registry=self.metrics.registry)
        self.ctx = zmq.Context()
        self.transport: Any = None
        self.publisher: Publisher | None = None
        if self.ccfg.tap_endpoint:
            from threatseer.hub.transport import PUBLISH, Transport

            self.transport = Transport(cfg, self.ctx, self.metrics)
            self.publisher = Publisher(self.ctx, self.ccfg.tap_endpoint, cfg.publish.snd_hwm,
                                       secure=lambda s: self.transport.secure(s, PUBLISH))
        self.consumer = consumer(self.ccfg, **{
            "group.id": group or self.ccfg.output_group, "isolation.level": "read_committed",
            "auto.offset.reset": "earliest", "enable.auto.commit": True,
            "enable.auto.offset.store": False, "auto.commit.interval.ms": 1000,
            "session.timeout.ms": self.ccfg.session_timeout_ms,
            "heartbeat.interval.ms": max(100, self.ccfg.session_timeout_ms // 6),
            "fetch.wait.max.ms": 20})
        self._last: dict[int, tuple[int, int]] = {}
        self.records = self.events = self.copies = self.bad_records = 0
        self._member("output-worker")

    def counters(self) -> dict[str, Any]:
        return {"records": self.records, "events": self.events, "copies_dropped": self.copies,
                "bad_records": self.bad_records, "outputs": self.outputs.status()}

    def start(self) -> None:
        self._serve()
        self.outputs.start()
        self.consumer.subscribe([self.ccfg.events_topic], on_revoke=self._forget,
                                on_lost=self._forget)
        self._run_loop()

    def stop(self) -> None:
        self._halt()
        self.outputs.close()
        if self.publisher is not None:
            self.publisher.close()
            self.transport.close()
        self.ctx.term()

    def _forget(self, _c: Any, parts: list[TopicPartition]) -> None:
        for tp in parts:
            self._last.pop(tp.partition, None)

    def _loop(self) -> None:
        try:
            while not self._stop.is_set():
                for m in take(self.consumer, 500, 0.1):
                    if m.error():
                        if m.error().code() != KafkaError._PARTITION_EOF:
                            log.warning("consume: %s", m.error())
                        continue
                    self.handle(m)
                    self.consumer.store_offsets(message=m)
                if self.publisher is not None:
                    self.publisher.flush()
        except Exception:
            log.exception("output worker failed")
        finally:
            self.consumer.close()

    def handle(self, m: Any) -> list[dict[str, Any]]:
        """Deliver one events record (unless it is a copy); returns its events."""
        self.records += 1
        pos = position(m.headers())
        if pos is not None:
            last = self._last.get(m.partition())
            if last is not None and pos <= last:
                self.copies += 1
                return []
            self._last[m.partition()] = pos
        try:
            events = _unpack(m.value() or b"")
        except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError,
                RecursionError):
            self.bad_records += 1
            return []
        self.events += len(events)
        if self.outputs.configs:
            for ev in events:
                self.outputs.emit(ev)
        if self.publisher is not None:
            self.publisher.add(events)
        return events


def wait_until(cond: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.05)
    return cond()
