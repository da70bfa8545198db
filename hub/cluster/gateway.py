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
import time
from dataclasses import dataclass
from typing import Any

import msgspec
import zmq
from confluent_kafka import KafkaError, KafkaException

from threatseer.hub.cluster.bindings import SharedBindings
from threatseer.hub.cluster.commands import CommandRelay
from threatseer.hub.cluster.kafka import ensure_topics, producer, require
from threatseer.hub.cluster.status import Member
from threatseer.hub.config import HubConfig
from threatseer.hub.ingest import SPOOFED, Ingest, Message, RateLimitedLog
from threatseer.hub.metrics import HubMetrics
from threatseer.hub.transport import Transport

log = logging.getLogger("threatseer.hub.cluster.gateway")
HEADER = "h"  # Kafka record header holding the wire header frame
# Kafka record header holding the ZeroMQ routing id of the batch's connection: a scorer sends
# the exec policy once per connection (a sensor that reconnected may have lost it).
PEER = "p"
# Kafka record header of a gateway's loss record (no body): what it refused of the record
# key's sensor since its last one, [[reason, batches, events], ...]; the scorer tells it as
# that sensor's sensor-loss events, as the hub does (hub/cluster/scorer.py).
LOSS = "loss"
_pack_loss = msgspec.msgpack.Encoder().encode


@dataclass(slots=True)
class Sender:
    epoch: int
    high: int = 0  # highest seq delivered to Kafka with no hole before it (acknowledged)


class Gateway(Member):
    def __init__(self, cfg: HubConfig) -> None:
        require(cfg.cluster)
        self.cfg = cfg
        self.ccfg = cfg.cluster
        counts = ensure_topics(self.ccfg)
        self.metrics = HubMetrics()
        self.ctx = zmq.Context()
        self.transport = Transport(cfg, self.ctx, self.metrics)
        self.name = self.ccfg.member()
        # Which CURVE key each sensor id belongs to, shared by every gateway (a claims log
        # in Kafka, first claim wins): no key takes an id bound at another gateway.
        self.bindings: Any = None
        try:
            self.bindings = SharedBindings(self.ccfg, self.name,
                                           self.ccfg.delivery_timeout_s)
            self.ingest = Ingest(self.ctx, cfg.ingest, self.metrics, self.transport,
                                 bindings=self.bindings)
        except BaseException:
            self.transport.close()
            if self.bindings is not None:
                self.bindings.close()
            raise
        self.producer = self._producer()
        # kill commands from the scorers, to the sensors connected here
        self.relay = CommandRelay(self.ccfg, self.ctx, counts[self.ccfg.commands_topic],
                                  self.name)
        self.senders: dict[str, Sender] = {}
        self.in_flight = 0
        self.produced = self.acked_batches = self.failed = self.holes = 0
        self._fatal = False
        self._log = RateLimitedLog(10.0)
        self._losses_at = time.monotonic()
        self.loss_records = 0
        self._member("gateway")

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
                "bad_input": self.ingest.bad_total, "loss_records": self.loss_records,
                "penalty_box": self.ingest.penalty.status(),
                "bindings": self.bindings.counters(), "commands": dict(self.relay.counts)}

    def start(self) -> None:
        self._serve()
        self.relay.start()
        self._run_loop()
        log.info("gateway %s: ingest %s -> %s", self.name, self.endpoint,
                 self.ccfg.batches_topic)

    def stop(self) -> None:
        """Stop taking batches, wait for Kafka's reports of those in flight (and ack them)."""
        self._halt()
        self.relay.stop()
        self.ingest.close()
        self.transport.close()
        self.bindings.close()
        self.ctx.term()

    def _loop(self) -> None:
        try:
            while not self._stop.is_set():
                # Claims are decided before the next take: a batch checked against a claim
                # is produced, held or refused by that claim's outcome, never a stale one.
                for sid, won, claim in self.bindings.poll():
                    self._decided(sid, won, claim)
                busy = self.in_flight or self.bindings.pending
                timeout = 20 if busy else 100
                if self.ingest.throttled:
                    # a boxed sender's messages keep the socket readable: Ingest's own pause
                    # (at most 10 ms) waits for anyone else's, then the commands that came
                    got = self.ingest.take(timeout)
                    self.relay.forward(self.ingest.send)
                else:
                    if not self.ingest.queued:  # a batch or a kill command wakes it
                        self.relay.wait(self.ingest.sock, timeout, self.ingest.send)
                    got = self.ingest.take(0)
                for msg in got:
                    if not self.bindings.hold(msg.sensor_id, msg):
                        self._produce(msg)
                self._report_losses()
                self.producer.poll(0)
                if self._fatal:
                    self._rebuild()
            self._report_losses(force=True)
            deadline = time.monotonic() + 10
            while self.in_flight and time.monotonic() < deadline:
                self.producer.poll(0.05)
            self.producer.flush(max(0.0, deadline - time.monotonic()))  # the loss records
        except Exception:
            log.exception("gateway loop failed")

    def _decided(self, sid: str, won: bool, claim: Any) -> None:
        """Our claim on ``sid`` is decided: its held batches go to Kafka (won) or are
        refused as spoofed (another key's claim came first, at this or another gateway)."""
        if won:
            for msg in claim.held:
                self._produce(msg)
            return
        if claim.held and not claim.expired and sid in self.bindings.keys:
            self.ingest.bad(sid, SPOOFED, f"key {claim.key} claimed sensor {sid} while key "
                            f"{self.bindings.keys[sid]} did at another gateway, first: "
                            f"{len(claim.held)} batches refused", len(claim.held))

    def _report_losses(self, force: bool = False) -> None:
        """What the ingest refused of known sensors (spoofed, epoch, too large, undecodable
        header...) since the last time, once per ``log_interval_s``: one loss record per
        sensor on the batches topic, keyed as its batches. The scorer that owns the partition
        turns it into the sensor-loss events the hub makes (one definition:
        ``refused_event``), in the transaction of the record's offset (told once)."""
        now = time.monotonic()
        if now - self._losses_at < self.cfg.ingest.log_interval_s and not force:
            return
        self._losses_at = now
        per_sensor: dict[str, list[tuple[str, int, int]]] = {}
        for sid, reason, batches, events in self.ingest.take_losses():
            per_sensor.setdefault(sid, []).append((reason, batches, events))
        for sid, losses in per_sensor.items():
            try:
                self.producer.produce(self.ccfg.batches_topic, value=b"", key=sid.encode(),
                                      headers=[(LOSS, _pack_loss(losses)), ("gw", self.name)])
                self.loss_records += 1
            except (BufferError, KafkaException) as exc:
                self._log.warn((sid, "kafka"), f"loss record not produced: {exc} (counted "
                               "in bad_input)")

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
        self.relay.connected(sid, peer)
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
                                      headers=[(HEADER, header), ("gw", self.name),
                                               (PEER, peer)],
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
