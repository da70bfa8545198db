"""The kill action in a cluster: scorers decide, gateways deliver, through the commands topic.

A scorer decides with the hub's own :class:`~threatseer.hub.response.Responder` (allow per
rule, protected processes, dry run, per-sensor rate limit, every decision logged). Its
``send`` is a :class:`CommandQueue`: the command goes to the commands topic at once, keyed by
sensor id and stamped with the time its event's batch reached the cluster (that batch
record's timestamp, the gateway's clock). The partition's scoring transaction (the alert that
says "sent") commits only once its commands are stored; if one is not, the transaction fails
and the partition is scored again, deciding again.

Commands are therefore delivered at least once, not in the transaction, which would hold
every kill for the transaction in flight on its partition plus its own (~30 ms more on the
test broker, measured by ``bench/response_bench.py --cluster``). At least once is safe
because a repeat can do nothing a first copy did not: the command id is derived from the
alert's ``event.id`` and rule (:func:`command_id`), so a replay, a takeover by another scorer
or a broker showing an aborted copy repeats the same id, which the sensor carries out once;
the sensor kills only the process the alert named (``process.entity_id``, never a reused
pid); and the gateways drop a command whose event reached the cluster too long ago.

The exec policy (enforce.yaml) takes the same way: the scorer calls the responder's
``on_batch`` with the batch's connection (sensor id, gateway, the ZeroMQ routing id the gateway
put in the batches record), so every connection gets the current policy once, as from the hub.

Every gateway runs a :class:`CommandRelay`: a consumer of the whole commands topic
(``read_committed``, no consumer group, from the end at start: a gateway never replays old
commands), on a thread of its own. It checks each record's key (a sensor id), size, shape (a
:class:`~threatseer.common.wire.KillCommand` or ``ExecPolicy``, re-encoded) and age (older than
``cluster.command_max_age_s`` is dropped: a stale kill is dangerous), and hands the good ones to
the gateway's loop over an inproc socket that the loop polls with its ingest socket, so a
command wakes it. The loop sends a command to the sensor's connection when the sensor's
batches come through this gateway, and ignores it otherwise (another gateway holds that
sensor). The sensor then checks the process identity itself and reports a ``kill`` event
through its normal batches.

Who may write to the commands topic is the Kafka cluster's to enforce (ACLs: the scorers'
principal only); a gateway trusts no record beyond what it checks here.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec
import zmq
from confluent_kafka import OFFSET_END, TIMESTAMP_NOT_AVAILABLE, KafkaException, TopicPartition

from threatseer.common import wire
from threatseer.hub.cluster.config import ClusterConfig
from threatseer.hub.cluster.kafka import consumer, producer, take
from threatseer.hub.ingest import RateLimitedLog

log = logging.getLogger("threatseer.hub.cluster.commands")
MAX_SENSORS = 100_000  # connections a gateway remembers (sensor id -> ZeroMQ peer)
# A kill command is < 6 KiB (wire.KillCommand's field limits); an exec policy is at most
# wire.MAX_COMMAND_BYTES.
MAX_KILL_BYTES = 8 * 1024
_decode_command = msgspec.msgpack.Decoder(wire.Command).decode
Event = dict[str, Any]


def command_id(ev: Event, rule: str) -> str:
    """The same id for the same alert and rule, whoever scores it (a replay after a failed
    transaction or a takeover): the sensor carries an id out once."""
    digest = hashlib.sha256(f"{ev.get('event.id', '')}\0{rule}".encode()).hexdigest()
    return "k-" + digest[:32]


@dataclass
class Deliveries:
    """The kill commands of one partition's cycle: how many were produced, and the errors
    of those Kafka could not store (the cycle's transaction then fails: decided again)."""

    sent: int = 0
    errors: list[str] = field(default_factory=list)


class CommandQueue:
    """The scorer's ``send`` for its Responder: a command goes to the commands topic at once
    (an idempotent producer, ``acks=all``), keyed by sensor id and stamped with the time its
    batch reached the cluster (``stamp``); ``target`` collects its delivery for the
    transaction of the partition being scored, which commits only once it is stored."""

    def __init__(self, cfg: ClusterConfig, name: str) -> None:
        self.cfg = cfg
        self.producer = producer(cfg, **{
            "enable.idempotence": True, "acks": "all", "linger.ms": 0,
            # a command Kafka has not stored by the time the gateways would drop it is lost
            "message.timeout.ms": max(1000, int(cfg.command_max_age_s * 1000)),
            "client.id": f"threatseer-scorer-{name}-commands"})
        self.target: Deliveries | None = None
        self.stamp = 0  # ms since the epoch: when the batch being scored reached a gateway

    def send(self, peer: bytes, frame: bytes) -> bool:
        """``peer`` is the sensor id (the record key; for the exec policy followed by
        ``\0``, the gateway and the connection's routing id). False (the Responder then says
        'not sent') when no partition is being scored or the producer refuses it."""
        deliveries = self.target
        if deliveries is None:
            return False

        def done(err: Any, _msg: Any) -> None:
            if err is not None:
                deliveries.errors.append(err.str())

        try:
            self.producer.produce(self.cfg.commands_topic, value=frame,
                                  key=peer.split(b"\0", 1)[0],
                                  timestamp=self.stamp or int(time.time() * 1000),
                                  on_delivery=done)
        except (BufferError, KafkaException) as exc:
            log.error("kill command for sensor %s not produced: %s", peer.decode(), exc)
            return False
        self.producer.poll(0)
        deliveries.sent += 1
        return True

    def settle(self, deliveries: Deliveries) -> str | None:
        """Wait until the cycle's commands are stored (or failed): None, or why not."""
        if deliveries.sent:
            self.producer.flush(self.cfg.command_max_age_s)
        if deliveries.errors:
            return deliveries.errors[0]
        return None

    def close(self) -> None:
        self.producer.flush(self.cfg.command_max_age_s)


class CommandRelay:
    """A gateway's reader of the commands topic (see the module doc). ``wait`` and
    ``forward`` run on the gateway's loop thread; the Kafka consumer on a thread of its own."""

    def __init__(self, cfg: ClusterConfig, ctx: zmq.Context, partitions: int,
                 name: str) -> None:
        self.cfg = cfg
        self.partitions = partitions
        self.name = name
        self.max_age_ms = int(cfg.command_max_age_s * 1000)
        self._addr = f"inproc://threatseer-commands-{uuid.uuid4().hex}"
        self._ctx = ctx
        self._pull = ctx.socket(zmq.PULL)
        self._pull.bind(self._addr)
        self._poller = zmq.Poller()
        self._peers: OrderedDict[str, bytes] = OrderedDict()  # sensor id -> its connection
        self._log = RateLimitedLog(10.0)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self.counts = {"read": 0, "forwarded": 0, "elsewhere": 0, "stale": 0, "bad": 0}

    # ---- the consumer thread ------------------------------------------------------------
    def start(self, timeout: float = 30.0) -> None:
        """Start reading; returns once the consumer is positioned at the end of every
        partition (a command produced after this returns is seen)."""
        self._thread = threading.Thread(target=self._run, name="gateway-commands",
                                        daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            log.warning("commands topic %s: not positioned after %.0f s; kill commands may "
                        "be late", self.cfg.commands_topic, timeout)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
        self._pull.close(0)

    def _run(self) -> None:
        push = self._ctx.socket(zmq.PUSH)
        push.connect(self._addr)
        c = consumer(self.cfg, **{
            # a group id the client needs, never joined (assign, no commits)
            "group.id": f"threatseer-gateway-commands-{uuid.uuid4().hex}",
            "enable.auto.commit": False, "isolation.level": "read_committed",
            "fetch.wait.max.ms": self.cfg.command_fetch_wait_ms,
            "client.id": f"threatseer-gateway-{self.name}-commands"})
        try:
            c.assign(self._ends(c))
            self._ready.set()
            while not self._stop.is_set():
                for m in take(c, 500, 0.1):
                    if m.error():
                        continue
                    self.counts["read"] += 1
                    checked = self.check(m.key(), m.value(), m.timestamp())
                    if checked is not None:
                        push.send_multipart(checked)
        except Exception:
            log.exception("commands relay failed: this gateway forwards no kill commands")
        finally:
            self._ready.set()
            c.close()
            push.close(0)

    def _ends(self, c: Any) -> list[TopicPartition]:
        """Each partition from its end as the broker tells it now, so every command produced
        once this returns is read. Not the logical OFFSET_END: librdkafka resolves that on
        its first fetch, which may come after the first commands (an exec policy sent once
        per connection was then skipped). A broker that answers one batch short (tansu)
        shows a few older commands again: dropped by age (``check``)."""
        tps = []
        for p in range(self.partitions):
            tp = TopicPartition(self.cfg.commands_topic, p)
            try:
                tp.offset = c.get_watermark_offsets(tp, timeout=10)[1]
            except KafkaException as exc:
                log.warning("commands topic %s[%d]: end not known (%s): reading from the "
                            "end when the client gets there", self.cfg.commands_topic, p, exc)
                tp.offset = OFFSET_END
            tps.append(tp)
        return tps

    def check(self, key: bytes | None, value: bytes | None,
              timestamp: tuple[int, int]) -> list[bytes] | None:
        """``[sensor id, command frame]`` of a record that is a fresh, well-formed kill
        command for a valid sensor id; None (counted, logged) for anything else."""
        try:
            sid = (key or b"").decode()
        except UnicodeDecodeError:
            sid = ""
        if not wire.SENSOR_ID.match(sid):
            return self._bad("?", "a record without a valid sensor id as its key")
        if value is None or len(value) > wire.MAX_COMMAND_BYTES:
            return self._bad(sid, f"a record of {len(value or b'')} bytes")
        try:
            cmd = _decode_command(value)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            return self._bad(sid, f"not a command ({exc})")
        if isinstance(cmd, wire.KillCommand) and len(value) > MAX_KILL_BYTES:
            return self._bad(sid, f"a kill command of {len(value)} bytes")
        if cmd.v != wire.VERSION:
            return self._bad(sid, f"a command of version {cmd.v!r}")
        ts_type, ts = timestamp
        age = int(time.time() * 1000) - ts
        if (ts_type == TIMESTAMP_NOT_AVAILABLE or abs(age) > self.max_age_ms) \
                and isinstance(cmd, wire.ExecPolicy):
            self.counts["stale"] += 1
            log.warning("exec policy %s for sensor %s dropped: sent more than "
                        "cluster.command_max_age_s ago (%.1f s); it gets one when it "
                        "reconnects", cmd.version, sid, self.cfg.command_max_age_s)
            return None
        if ts_type == TIMESTAMP_NOT_AVAILABLE or abs(age) > self.max_age_ms:
            self.counts["stale"] += 1
            log.warning("kill command %s for sensor %s (pid %d, rule %r, alert %s) dropped: "
                        "decided %s ago, more than cluster.command_max_age_s (%.1f s)",
                        cmd.id, sid, cmd.pid, cmd.rule, cmd.event_id or "-",
                        "an unknown time" if ts_type == TIMESTAMP_NOT_AVAILABLE
                        else f"{age / 1000:.1f} s", self.cfg.command_max_age_s)
            return None
        return [sid.encode(), wire.encode_command(cmd)]

    def _bad(self, sid: str, what: str) -> None:
        self.counts["bad"] += 1
        self._log.warn(("bad", sid), f"commands topic {self.cfg.commands_topic}: {what} "
                       f"(key {sid}): dropped")
        return None

    # ---- the gateway's loop thread --------------------------------------------------------
    def connected(self, sid: str, peer: bytes) -> None:
        """``sid``'s batches come through this gateway on connection ``peer`` (its latest)."""
        peers = self._peers
        if peers.get(sid) != peer:
            peers[sid] = peer
            if len(peers) > MAX_SENSORS:
                peers.popitem(last=False)

    def wait(self, sock: zmq.Socket, timeout_ms: int, send: Callable[[bytes, bytes], bool]
             ) -> None:
        """Wait up to ``timeout_ms`` for input on ``sock`` or a command; forward the
        commands that came."""
        poller = self._poller
        if not poller.sockets:
            poller.register(sock, zmq.POLLIN)
            poller.register(self._pull, zmq.POLLIN)
        if poller.poll(timeout_ms):
            self.forward(send)

    def forward(self, send: Callable[[bytes, bytes], bool]) -> None:
        """Send each command waiting to its sensor's connection, if it is on this gateway."""
        while True:
            try:
                sid_b, frame = self._pull.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            sid = sid_b.decode()
            peer = self._peers.get(sid)
            if peer is None:
                self.counts["elsewhere"] += 1
                log.debug("command for sensor %s: not connected here", sid)
                continue
            if send(peer, frame):
                self.counts["forwarded"] += 1
                log.info("command for sensor %s forwarded to its connection", sid)
            else:
                self._log.warn(("send", sid), f"command for sensor {sid} not sent: its "
                               "connection is gone")
