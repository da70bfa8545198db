"""Ingest: the ZeroMQ ROUTER socket the sensors' DEALERs send wire batches to.

ROUTER (not PULL) so the hub can acknowledge each sensor on its own authenticated connection
(docs/transport.md); a message is ``[peer routing id, header, body]``.

Fairness comes in two layers. ZeroMQ itself reads connected peers round-robin and keeps a
bounded pipe (``rcv_hwm``) per peer, so a sensor sending faster than the hub scores fills only
its own pipe and is held back at its end. On top, each cycle takes at most
``max_batches_per_cycle`` messages and hands them to the pipeline interleaved per sensor
(one batch of each sensor in turn), so another sensor's batch never waits behind a burst.

Bad input never stops the hub: every refused message or event is counted per sensor and
reason (:mod:`threatseer.common.wire` reasons plus ``schema``), logged at most once per
``log_interval_s`` per sensor and reason, and the good events beside it are kept.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import msgpack
import zmq

from threatseer.common import wire
from threatseer.hub.config import IngestConfig
from threatseer.hub.metrics import HubMetrics
from threatseer.hub.validate import problems

log = logging.getLogger("threatseer.hub.ingest")
SCHEMA = "schema"  # an event in a good batch lacks required fields (or is not a map)
UNKNOWN_SENSOR = "unknown"
OTHER_SENSORS = "other"  # stats and metric label of sensors beyond MAX_TRACKED_SENSORS
MAX_TRACKED_SENSORS = 10_000


@dataclass
class SensorStats:
    events_in: int = 0
    events_out: int = 0
    batches: int = 0
    last_seq: int = -1
    last_seen: float = 0.0
    host: str = ""
    bad: dict[str, int] = field(default_factory=dict)
    duplicates: int = 0  # batches received again after they were scored (not scored again)
    lost_batches: int = 0  # final sequence gaps (reported as sensor-loss events)


class RateLimitedLog:
    """One warning per key per interval; the lines in between are counted, not lost."""

    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self._last: dict[tuple[str, str], tuple[float, int]] = {}

    def warn(self, key: tuple[str, str], message: str) -> None:
        now = time.monotonic()
        last, suppressed = self._last.get(key, (-1e18, 0))
        if now - last >= self.interval_s:
            extra = f" ({suppressed} more since last report)" if suppressed else ""
            log.warning("sensor %s: %s: %s%s", key[0], key[1], message, extra)
            self._last[key] = (now, 0)
        else:
            self._last[key] = (last, suppressed + 1)


@dataclass(slots=True)
class Received:
    """A batch whose body is split into its events' msgpack: :meth:`Ingest.events` decodes
    and checks them a slice at a time (see :func:`threatseer.common.wire.decode_raw`)."""

    sensor_id: str
    seq: int
    host: str
    sent_ns: int
    raws: list[Any]  # each event's msgpack
    label: str = ""  # key in Ingest.sensors and metric label (sensor id, or "other")
    epoch: int = 0
    common: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class Message:
    """A message whose header is valid; its body is split by :meth:`Ingest.open` and
    decoded a slice at a time by :meth:`Ingest.events`."""

    buffers: list[Any]
    sensor_id: str
    label: str
    peer: bytes = b""  # ROUTER routing id: where the ack goes
    epoch: int = 0
    seq: int = 0
    base: int = 0
    dropped: int = 0  # events the sender dropped from its spool in this epoch (header "d")


def _sensor_of(frames: list[Any]) -> str:
    """Best-effort sensor id of a refused message (for the counter label only)."""
    try:
        header = msgpack.unpackb(frames[0], raw=False)
        sid = header.get("sid") if isinstance(header, dict) else None
        if isinstance(sid, str) and 0 < len(sid) <= 128:
            return sid
    except Exception:
        pass
    try:
        peer = frames[0].get("Peer-Address")
        if peer:
            return f"peer:{peer}"
    except Exception:
        pass
    return UNKNOWN_SENSOR


class Ingest:
    def __init__(self, ctx: zmq.Context | None, cfg: IngestConfig, metrics: HubMetrics,
                 transport: Any = None) -> None:
        self.cfg = cfg
        self.metrics = metrics
        self.transport = transport
        # No context: no socket. A cluster scorer gets its batches from Kafka and uses only
        # the checks, counters and decoding below (docs/cluster.md).
        self.sock: Any = None
        self.endpoint = ""
        if ctx is not None:
            self.sock = ctx.socket(zmq.ROUTER)
            self.sock.setsockopt(zmq.RCVHWM, cfg.rcv_hwm)
            self.sock.setsockopt(zmq.SNDHWM, cfg.rcv_hwm)
            self.sock.setsockopt(zmq.LINGER, 0)
            if transport is not None:
                from threatseer.hub.transport import INGEST

                transport.secure(self.sock, INGEST)
            self.sock.bind(cfg.endpoint)
            self.endpoint = self.sock.getsockopt_string(zmq.LAST_ENDPOINT)
        self.sensors: dict[str, SensorStats] = {}
        self.bad_total = 0
        self._log = RateLimitedLog(cfg.log_interval_s)
        # CURVE: one key, one sensor id (bound at first use since start). Another key claiming
        # a bound id, or a key sending under a second id, is refused ("spoofed"): one allowed
        # key cannot disturb another sensor's sequence, nor make up sensors (the ledger and
        # the stats stay bounded by the allow-list).
        self._owners: dict[str, str] = {}  # sensor id -> key
        self._ids: dict[str, str] = {}  # key -> sensor id

    def stats(self, sensor_id: str) -> SensorStats:
        st = self.sensors.get(sensor_id)
        if st is None:
            if len(self.sensors) >= MAX_TRACKED_SENSORS:  # ids are peer-chosen: bound them
                sensor_id = OTHER_SENSORS
                st = self.sensors.get(sensor_id)
            if st is None:
                st = self.sensors[sensor_id] = SensorStats()
        return st

    def label(self, sensor_id: str) -> str:
        """The metric label of a sensor (``other`` beyond MAX_TRACKED_SENSORS)."""
        return sensor_id if sensor_id in self.sensors else OTHER_SENSORS

    def bad(self, sensor_id: str, reason: str, detail: str, n: int = 1) -> None:
        st = self.stats(sensor_id)
        st.bad[reason] = st.bad.get(reason, 0) + n
        self.bad_total += n
        sensor_id = self.label(sensor_id)
        self.metrics.child(self.metrics.bad_input, sensor_id, reason).inc(n)
        self._log.warn((sensor_id, reason), detail)

    def take(self, timeout_ms: int) -> list[Message]:
        """Wait up to ``timeout_ms`` for input, then return one cycle's messages, fair order.

        Only headers are decoded here (to know the sensor); bodies are decoded by
        :meth:`open` and :meth:`events` right before scoring, one slice of a batch alive at a
        time (see ``CHUNK_EVENTS`` in the daemon): decoding a whole cycle up front doubled
        the decode cost (fresh memory, cold caches).
        """
        sock = self.sock
        if not sock.poll(timeout_ms, zmq.POLLIN):
            return []
        per_sensor: dict[str, deque[Message]] = {}
        for _ in range(self.cfg.max_batches_per_cycle):
            try:
                frames = sock.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                break
            msg = self._check(frames)
            if msg is not None:
                q = per_sensor.get(msg.label)
                if q is None:
                    q = per_sensor[msg.label] = deque()
                q.append(msg)
        for sid, q in per_sensor.items():
            self.metrics.child(self.metrics.pending, sid).set(len(q))
        out: list[Message] = []
        queues = list(per_sensor.values())
        while queues:
            for q in queues:
                out.append(q.popleft())
            queues = [q for q in queues if q]
        return out

    def ack(self, peer: bytes, epoch: int, seq: int) -> None:
        """Tell a sensor everything up to ``seq`` is durably scored (dropped when it is gone:
        it resends and is acknowledged then)."""
        with contextlib.suppress(zmq.ZMQError):
            self.sock.send_multipart((peer, wire.encode_ack(epoch, seq)), zmq.NOBLOCK)

    def _revoked(self, frame: Any) -> bool:
        """A message from a key that left the allow-list after its handshake (counted)."""
        auth = self.transport.auth if self.transport is not None else None
        if auth is None:
            return False
        key = frame.get("User-Id")
        if key and auth.allowed("ingest", key.encode()):
            return False
        auth.revoked_message("ingest", key or "?", frame.get("Peer-Address") or "?")
        return True

    def _check(self, routed: list[Any]) -> Message | None:
        if len(routed) < 2:  # the routing id alone: cannot happen on a ROUTER, but be sure
            self.bad(UNKNOWN_SENSOR, wire.BAD_FRAMES, "empty message")
            return None
        if self._revoked(routed[1]):
            return None
        peer, frames = routed[0].bytes, routed[1:]
        size = sum(len(f) for f in frames)
        if size > self.cfg.max_message_bytes:
            self.bad(_sensor_of(frames), wire.TOO_LARGE,
                     f"message of {size} bytes > max_message_bytes {self.cfg.max_message_bytes}")
            return None
        buffers = [f.buffer for f in frames]
        try:
            header = wire.decode_header(buffers)
        except wire.WireError as exc:
            self.bad(_sensor_of(frames), exc.reason, str(exc))
            return None
        sid = header["sid"]
        key = routed[1].get("User-Id") if self.transport is not None and \
            not self.transport.plaintext else None
        if key and self._ids.get(key) != sid:
            owner, bound = self._owners.get(sid), self._ids.get(key)
            if owner is not None or bound is not None:
                self.bad(sid, "spoofed", f"key {key} sent as sensor {sid} (key bound to "
                         f"{bound or '-'}, id bound to {owner or '-'}): refused")
                return None
            self._owners[sid] = key
            self._ids[key] = sid
        self.stats(header["sid"])
        return Message(buffers, header["sid"], self.label(header["sid"]), peer,
                       header.get("e", 0), header["seq"], header.get("b", 0), header.get("d", 0))

    def open(self, msg: Message) -> Received | None:
        """Split a message's body into its events (decoded by :meth:`events`)."""
        try:
            batch, raws = wire.decode_raw(msg.buffers)
        except wire.WireError as exc:
            self.bad(msg.label, exc.reason, str(exc))
            return None
        sid = msg.label
        st = self.sensors[sid]
        n = len(raws)
        st.batches += 1
        st.events_in += n
        st.last_seq = batch.seq
        st.last_seen = time.time()
        st.host = batch.host
        m = self.metrics
        m.child(m.batches, sid).inc()
        m.child(m.events_in, sid).inc(n)
        return Received(batch.sensor_id, batch.seq, batch.host, batch.sent_ns, raws, sid,
                        batch.epoch, batch.common)

    def events(self, rec: Received, start: int = 0,
               stop: int | None = None) -> list[dict[str, Any]]:
        """Events ``start:stop`` of ``rec``, decoded and checked against the schema; the
        refused ones are counted (a slice that does not decode counts once, as ``body``)."""
        raws = rec.raws[start:stop]
        try:
            events = wire.decode_events(raws, rec.common)
        except wire.WireError as exc:
            self.bad(rec.label, exc.reason, f"batch {rec.seq}, events {start}-"
                     f"{start + len(raws) - 1}: {exc}")
            return []
        bad = problems(events)
        if bad:
            self.bad(rec.label, SCHEMA, f"batch {rec.seq}: {len(bad)} event(s) refused, "
                     f"first: {bad[0][1]}", len(bad))
            skip = {i for i, _ in bad}
            events = [ev for i, ev in enumerate(events) if i not in skip]
        return events

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
