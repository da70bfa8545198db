"""A gateway: the hub's ingest (CURVE, allow-lists, validation, limits) in front of Kafka.

It terminates the sensors' ZeroMQ connections with the hub's own :class:`Ingest` and
:class:`Transport`, and produces each batch, as received, to the batches topic keyed by
sensor id (so a sensor's batches stay in one partition, in order), with an idempotent
producer and ``acks=all``. A batch is acknowledged to its sensor only from Kafka's delivery
report, never before: a gateway killed at any point has acknowledged only what Kafka holds,
and the sensor resends the rest (through another gateway, see sensor/ship.py).

Acks are cumulative (``ack: seq`` frees everything up to seq), so a gateway acknowledges only
a run it has delivered without a hole: from the sender's ``base`` (the oldest batch it still
has) or from the last batch it acknowledged, on. A batch after a hole (lost in a reconnect)
is produced but not acknowledged; the sender's go-back resend fills the hole, and the scorers
drop the copies by (sensor, epoch, seq).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass
from typing import Any

import zmq
from confluent_kafka import KafkaError, KafkaException

from threatseer.hub.cluster.kafka import ensure_topics, producer, require
from threatseer.hub.cluster.status import Beacon, serve_metrics
from threatseer.hub.config import HubConfig
from threatseer.hub.ingest import Ingest, Message, RateLimitedLog
from threatseer.hub.ledger import Ledger
from threatseer.hub.metrics import HubMetrics
from threatseer.hub.transport import Transport

log = logging.getLogger("threatseer.hub.cluster.gateway")
HEADER = "h"  # Kafka record header holding the wire header frame
BINDINGS_FILE = "gateway-bindings.db"  # in state_dir: sensor id <-> CURVE key


@dataclass(slots=True)
class Sender:
    epoch: int
    high: int = 0  # highest seq delivered to Kafka with no hole before it (acknowledged)


class Gateway:
    def __init__(self, cfg: HubConfig) -> None:
        require(cfg.cluster)
        self.cfg = cfg
        self.ccfg = cfg.cluster
        ensure_topics(self.ccfg)
        self.metrics = HubMetrics()
        self.ctx = zmq.Context()
        self.transport = Transport(cfg, self.ctx, self.metrics)
        # Which CURVE key each sensor id belongs to, durably (a ledger used for its bindings
        # only): a restarted gateway still refuses another key sending as a known sensor.
        self.bindings = Ledger(os.path.join(cfg.state_dir, BINDINGS_FILE),
                               cfg.ingest.ledger_synchronous)
        try:
            self.ingest = Ingest(self.ctx, cfg.ingest, self.metrics, self.transport,
                                 bindings=self.bindings)
        except BaseException:
            self.transport.close()
            self.bindings.close()
            raise
        self.name = self.ccfg.member()
        self.producer = self._producer()
        self.senders: dict[str, Sender] = {}
        self.in_flight = 0
        self.produced = self.acked_batches = self.failed = self.holes = 0
        self._fatal = False
        self._log = RateLimitedLog(10.0)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.beacon = Beacon(self.ccfg, "gateway", self.counters)
        self._http: Any = None

    def _producer(self) -> Any:
        return producer(self.ccfg, **{
            "enable.idempotence": True, "acks": "all", "linger.ms": 1,
            "compression.type": "none",  # bodies are LZ4 already
            "partitioner": "murmur2_random",  # Java's: any client puts a key where we do
            "message.timeout.ms": int(self.ccfg.delivery_timeout_s * 1000),
            "error_cb": self._on_error, "client.id": f"threatseer-gateway-{self.name}"})

    def _on_error(self, err: KafkaError) -> None:
        if err.fatal():
            self._fatal = True
        self._log.warn(("kafka", err.name()), err.str())

    @property
    def endpoint(self) -> str:
        return self.ingest.endpoint

    def counters(self) -> dict[str, Any]:
        return {"ingest": self.endpoint, "sensors": len(self.senders),
                "produced": self.produced, "acknowledged": self.acked_batches,
                "failed": self.failed, "holes": self.holes, "in_flight": self.in_flight,
                "bad_input": self.ingest.bad_total}

    def start(self) -> None:
        self._http = serve_metrics(self.metrics, self.ccfg, "gateway")
        self.beacon.start()
        self._thread = threading.Thread(target=self._loop, name="gateway", daemon=True)
        self._thread.start()
        log.info("gateway %s: ingest %s -> %s", self.name, self.endpoint,
                 self.ccfg.batches_topic)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stop(self) -> None:
        """Stop taking batches, wait for Kafka's reports of those in flight (and ack them)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.beacon.stop()
        if self._http is not None:
            self._http.shutdown()
        self.ingest.close()
        self.transport.close()
        self.bindings.close()
        self.ctx.term()

    def _loop(self) -> None:
        try:
            while not self._stop.is_set():
                got = self.ingest.take(20 if self.in_flight else 100)
                self._commit_bindings()
                for msg in got:
                    self._produce(msg)
                self.producer.poll(0)
                if self._fatal:
                    self._rebuild()
            deadline = time.monotonic() + 10
            while self.in_flight and time.monotonic() < deadline:
                self.producer.poll(0.05)
        except Exception:
            log.exception("gateway loop failed")

    def _commit_bindings(self) -> None:
        """Make the bindings of the batches just taken durable before any is acknowledged
        (a no-op without new ones). On failure they are forgotten, not the batches: the next
        batch of each sensor binds again."""
        try:
            self.bindings.commit()
        except Exception as exc:
            self._log.warn(("gateway", "bindings"), f"sensor bindings not stored: {exc}")

    def _rebuild(self) -> None:
        """A fatal producer error (e.g. the broker forgot our producer id): new producer.
        What was in flight is not acknowledged: the sensors resend it."""
        log.error("Kafka producer failed fatally: starting a new one; unacknowledged batches "
                  "will be resent by their sensors")
        self.producer.purge()
        self.producer = self._producer()
        self._fatal = False
        self.in_flight = 0

    def _produce(self, msg: Message) -> None:
        header, body = (bytes(b) for b in msg.buffers)
        sid, peer, epoch, seq, base = msg.sensor_id, msg.peer, msg.epoch, msg.seq, msg.base
        st = self.ingest.stats(sid)
        st.batches += 1
        st.last_seq = seq
        st.last_seen = time.time()

        def delivered(err: KafkaError | None, _m: Any) -> None:
            self.in_flight -= 1
            if err is not None:
                self.failed += 1
                self._log.warn((sid, "kafka"), f"batch {seq} not stored: {err.str()} "
                               "(not acknowledged: the sensor resends it)")
                return
            self._delivered(peer, sid, epoch, seq, base)

        while True:
            try:
                self.producer.produce(self.ccfg.batches_topic, value=body, key=sid.encode(),
                                      headers=[(HEADER, header), ("gw", self.name)],
                                      on_delivery=delivered)
                self.in_flight += 1
                self.produced += 1
                return
            except BufferError:  # librdkafka's queue is full: wait for reports, retry
                self.producer.poll(0.05)
            except KafkaException as exc:
                self.failed += 1
                self._log.warn((sid, "kafka"), f"batch {seq} not produced: {exc}")
                return

    def _delivered(self, peer: bytes, sid: str, epoch: int, seq: int, base: int) -> None:
        s = self.senders.get(sid)
        if s is None or s.epoch != epoch:
            if s is not None and epoch < s.epoch:
                return
            s = self.senders[sid] = Sender(epoch)
        if seq <= s.high + 1 or seq <= base:
            s.high = max(s.high, seq)
            self.acked_batches += 1
            self.ingest.ack(peer, epoch, s.high)
        else:
            self.holes += 1  # the sender's go-back resend will fill it
