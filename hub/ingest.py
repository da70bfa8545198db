"""Ingest: the ZeroMQ ROUTER socket the sensors' DEALERs send wire batches to.

ROUTER (not PULL) so the hub can acknowledge each sensor on its own authenticated connection
(docs/transport.md); a message is ``[peer routing id, header, body]``.

Fairness comes in two layers. ZeroMQ itself reads connected peers round-robin and keeps a
bounded pipe (``rcv_hwm``) per peer, so a sensor sending faster than the hub scores fills only
its own pipe and is held back at its end. On top, the hub holds at most
``max_batches_per_cycle`` messages taken off the socket, in one queue per sensor, and scores
them in rounds of one batch per sensor (:meth:`Ingest.take`, :meth:`Ingest.next_round`,
taking new arrivals between rounds with :meth:`Ingest.intake`); the pipeline commits and
acknowledges after at most ``max_cycle_ms`` of rounds, or (after a quarter of that) as soon as
a sensor of the cycle has nothing more queued. So a sensor whose batches are expensive delays
another sensor's ack by one of its batches per round, never by a whole burst. A sender that
has proven hostile (malformed batches) goes to the penalty box (hub/penalty.py): its messages
are refused unread, and read only a few per pause, so its flood costs next to nothing.

Bad input never stops the hub: every refused message or event is counted per sensor and
reason (:mod:`threatseer.common.wire` reasons plus the ones below), logged at most once per
``log_interval_s`` per sensor and reason, and the good events beside it are kept. What a
known sensor loses that way is also reported as ``sensor-loss`` events (one per sensor and
reason per ``log_interval_s``, see :meth:`Ingest.take_losses`), so it shows where the
analysts look.

Who a sensor is (CURVE): the sensor id in a batch header is the sender's claim; the hub binds
each id to the CURVE key that first sent it, durably (in the ledger, so a restart changes
nothing), one id per key. Another key claiming a bound id, or a bound key claiming a second
id, is refused (``spoofed``), so an allowed key can neither disturb another sensor's sequence
nor make up sensors. An id whose key has left the allow-list is free again (a reinstalled
sensor with a new key keeps its name). Every event then carries the authenticated id in
``agent.id`` and an ``event.id`` in its namespace (:func:`threatseer.hub._batch.prepare`).
In plaintext mode there is no key and the id is whatever the header says.
"""

from __future__ import annotations

import logging
import select
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import msgpack
import zmq

from threatseer.common import wire
from threatseer.hub.config import IngestConfig
from threatseer.hub.ledger import MemoryBindings
from threatseer.hub.metrics import HubMetrics
from threatseer.hub.penalty import PenaltyBox, describe
from threatseer.hub.validate import Limits, check

log = logging.getLogger("threatseer.hub.ingest")
SCHEMA = "schema"  # an event in a good batch lacks required fields or has a bad value
UNKNOWN_FIELD = "unknown-field"  # a field the schema does not know (removed, event kept)
TRUNCATED = "truncated"  # a string or list cut at the ingest limits (event kept)
SPOOFED = "spoofed"  # a key sending under a sensor id that is not its own
BAD_EPOCH = "epoch"  # an epoch more than MAX_EPOCH_AHEAD_NS ahead of the hub's clock
STALE_EPOCH = "stale-epoch"  # an epoch older than the sensor's current one
FAILED = "failed"  # a batch whose scoring or output failed (kept in the failed-batches file)
PENALTY = "penalty-box"  # a message of a sender in the penalty box, refused unread
# An epoch is the sender's clock when its spool was made: one from further in the future is
# refused, so a stolen key cannot make every later epoch of that sensor look stale.
MAX_EPOCH_AHEAD_NS = 86_400 * 10**9
# ZMQ_MAXMSGSIZE is checked per frame on the wire, where CURVE adds its box to each one.
CURVE_FRAME_OVERHEAD = 1024
UNKNOWN_SENSOR = "unknown"
OTHER_SENSORS = "other"  # stats and metric label of sensors beyond MAX_TRACKED_SENSORS
MAX_TRACKED_SENSORS = 10_000
# intake() reads at most this many messages per batch it may queue (see Ingest.__init__).
READS_PER_QUEUED = 4
# intake() stops reading once it reads a boxed sender's connection a second time (ZeroMQ
# reads the connections' pipes in turn, one message each, so every other connection has had
# its turn by then), and when nothing else was queued, take() pauses up to this long before
# reading again: a boxed sender's pipe then fills (rcv_hwm), ZeroMQ stops reading (and
# decrypting) its connection and its sends block, so however fast it could send it costs the
# hub a few hundred lookups a second. Another sensor's batch ends the pause at once (see
# Ingest._pause).
BOXED_PAUSE_S = 0.01


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
    sender: Any = None  # who sent it, for the penalty box (see Message.sender)
    struck: bool = False  # already a strike for the penalty box


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
    count: int = 0  # events the header says the batch holds
    # The penalty box's sender (hub/penalty.py): the CURVE key, or in plaintext the routing
    # id; None where the batch did not come off a socket (a cluster scorer's).
    sender: Any = None


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
                 transport: Any = None, bindings: Any = None) -> None:
        self.cfg = cfg
        self.metrics = metrics
        self.transport = transport
        self.limits = Limits(cfg.max_field_chars, cfg.max_list_items)
        # No context: no socket. A cluster scorer gets its batches from Kafka and uses only
        # the checks, counters and decoding below (docs/cluster.md).
        self.sock: Any = None
        self.endpoint = ""
        if ctx is not None:
            self.sock = ctx.socket(zmq.ROUTER)
            self.sock.setsockopt(zmq.RCVHWM, cfg.rcv_hwm)
            self.sock.setsockopt(zmq.SNDHWM, cfg.rcv_hwm)
            self.sock.setsockopt(zmq.LINGER, 0)
            # A bigger frame drops the connection as soon as its length is read: the hub
            # never holds it (without this a 512 MiB message was received whole, then refused).
            self.sock.setsockopt(zmq.MAXMSGSIZE, cfg.max_message_bytes + CURVE_FRAME_OVERHEAD)
            if transport is not None:
                from threatseer.hub.transport import INGEST

                transport.secure(self.sock, INGEST)
            self.sock.bind(cfg.endpoint)
            self.endpoint = self.sock.getsockopt_string(zmq.LAST_ENDPOINT)
            self._fd_poll = select.poll()  # see _pause
            self._fd_poll.register(self.sock.getsockopt(zmq.FD), select.POLLIN)
        self.sensors: dict[str, SensorStats] = {}
        self.bad_total = 0
        self._log = RateLimitedLog(cfg.log_interval_s)
        # CURVE: one key, one sensor id (see the module doc): the ledger's durable bindings.
        self.bindings = bindings if bindings is not None else MemoryBindings()
        self._queues: dict[str, deque[Message]] = {}  # per sensor label, taken, not scored
        self.queued = 0
        self.curve = transport is not None and not transport.plaintext
        # (sensor id, reason) -> [batches, events] refused since the last take_losses()
        self._losses: dict[tuple[str, str], list[int]] = {}
        self.penalty = PenaltyBox(cfg.penalty_strikes, cfg.penalty_window_s, cfg.penalty_box_s)
        # Messages read per intake(): what is refused is read but not queued, so without a
        # bound a boxed sender flooding faster than the hub drops would hold the cycle open.
        self._reads_per_intake = READS_PER_QUEUED * cfg.max_batches_per_cycle
        self._throttled = False  # the last intake() stopped at a boxed connection's 2nd read
        self._unread = False  # the last intake() left messages on the socket

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

    def lost(self, sensor_id: str, reason: str, batches: int, events: int) -> None:
        """A known sensor lost ``batches`` batches / ``events`` events to a refusal: told in
        its next loss event for ``reason`` (see :meth:`take_losses`)."""
        if sensor_id not in self.sensors:  # never an id that is not tracked: bounded
            return
        acc = self._losses.get((sensor_id, reason))
        if acc is None:
            self._losses[(sensor_id, reason)] = [batches, events]
        else:
            acc[0] += batches
            acc[1] += events

    def take_losses(self) -> list[tuple[str, str, int, int]]:
        """``(sensor id, reason, batches, events)`` refused since the last call."""
        out = [(sid, reason, b, e) for (sid, reason), (b, e) in self._losses.items()]
        self._losses.clear()
        return out

    def refuse(self, msg: Message, reason: str, detail: str) -> None:
        """A whole batch of a known sensor is refused: counted, logged, told as a loss."""
        self.bad(msg.label, reason, detail)
        self.lost(msg.label, reason, 1, msg.count)

    @property
    def throttled(self) -> bool:
        """The last intake stopped at a boxed sender: the socket stays readable with its
        messages, so waiting on it (zmq.poll) returns at once; :meth:`take` pauses instead."""
        return self._throttled

    def take(self, timeout_ms: int) -> list[Message]:
        """Wait up to ``timeout_ms`` for input (not at all while batches are queued), take
        what the socket holds into the per-sensor queues (at most ``max_batches_per_cycle``
        queued in all), and return the first round: one batch per sensor.

        Only headers are decoded here (to know the sensor); bodies are decoded by
        :meth:`open` and :meth:`events` right before scoring, one slice of a batch alive at a
        time (see ``CHUNK_EVENTS`` in the daemon): decoding a whole cycle up front doubled
        the decode cost (fresh memory, cold caches).
        """
        if self._throttled and not self.queued:
            self._pause(min(BOXED_PAUSE_S, timeout_ms / 1000))
        elif not self.queued and not self.sock.poll(timeout_ms, zmq.POLLIN):
            return []
        self.intake()
        return self.next_round()

    def intake(self) -> None:
        """Take what the socket holds, without waiting, into the per-sensor queues (at most
        ``max_batches_per_cycle`` queued in all). Between the rounds of a cycle too, so a
        batch that arrives while another sensor's flood is scored joins the next round."""
        sock = self.sock
        queues = self._queues
        most = self.cfg.max_batches_per_cycle
        now = time.monotonic()
        boxed: dict[Any, int] = {}  # sender -> its messages refused unread by this call
        boxed_peers: set[bytes] = set()  # ... and their connections
        if self._unread:
            # A pipe ZeroMQ found empty is read again only once the socket has processed
            # the command saying it has a message, which recv does only every 100 messages
            # or when it finds the socket empty: beside a boxed sender's pipe, never empty,
            # another sensor's batch waited ~12 pauses. This processes them.
            sock.getsockopt(zmq.EVENTS)
        self._unread = True
        self._throttled = False
        for _ in range(self._reads_per_intake):
            if self.queued >= most:
                break
            try:
                frames = sock.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                self._unread = False
                break
            msg = self._check(frames, now, boxed, boxed_peers)
            if msg is None:
                if boxed and sum(boxed.values()) > len(boxed_peers):
                    self._throttled = True  # a boxed connection read twice: see the constant
                    break
            else:
                q = queues.get(msg.label)
                if q is None:
                    q = queues[msg.label] = deque()
                q.append(msg)
                self.queued += 1
        if boxed:
            self._count_boxed(boxed)
        for sid, q in queues.items():
            self.metrics.child(self.metrics.pending, sid).set(len(q))

    def _pause(self, seconds: float) -> None:
        """Wait up to ``seconds`` while only boxed senders have messages, ending as soon as
        another peer's pipe has one. ``zmq.poll`` cannot tell (the socket is readable all
        along, with the boxed sender's messages); the socket's ZMQ_FD can: ZeroMQ signals it
        when a command reaches the socket, and a message in a pipe the socket found empty
        (another sensor's next batch, the boxed sender's pipe never is) comes with one.
        intake() processed the commands before so far (getsockopt(EVENTS)), so the FD now
        signals only new ones."""
        self._fd_poll.poll(seconds * 1000)

    def queued_sensors(self) -> Any:
        """The labels of the sensors with batches queued (a set-like view)."""
        return self._queues.keys()

    def next_round(self) -> list[Message]:
        """One queued batch of each sensor that has one, in the order they first queued."""
        out = []
        queues = self._queues
        for sid in list(queues):
            q = queues[sid]
            out.append(q.popleft())
            if not q:
                del queues[sid]
                self.metrics.child(self.metrics.pending, sid).set(0)
        self.queued -= len(out)
        return out

    def ack(self, peer: bytes, epoch: int, seq: int) -> None:
        """Tell a sensor everything up to ``seq`` is durably scored (dropped when it is gone:
        it resends and is acknowledged then)."""
        self.send(peer, wire.encode_ack(epoch, seq))

    def send(self, peer: bytes, frame: bytes) -> bool:
        """One frame to a sensor's connection (acks, commands); False when it could not be
        queued (ROUTER drops frames for a peer that is gone, silently)."""
        try:
            self.sock.send_multipart((peer, frame), zmq.NOBLOCK)
        except zmq.ZMQError:
            return False
        return True

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

    def _check(self, routed: list[Any], now: float, boxed: dict[Any, int],
               boxed_peers: set[bytes]) -> Message | None:
        """The message's header checked (``now``: monotonic, for the penalty box); None
        when refused (counted; a sender in the penalty box only in ``boxed`` and its
        connection in ``boxed_peers``)."""
        if len(routed) < 2:  # the routing id alone: cannot happen on a ROUTER, but be sure
            self.bad(UNKNOWN_SENSOR, wire.BAD_FRAMES, "empty message")
            return None
        if self._revoked(routed[1]):
            return None
        key = routed[1].get("User-Id") if self.curve else None
        peer = routed[0].bytes
        sender = key or peer
        if self.penalty.boxed(sender, now):  # before anything is decoded: see hub/penalty.py
            boxed[sender] = boxed.get(sender, 0) + 1
            boxed_peers.add(peer)
            return None
        owner = self.bindings.ids.get(key) if key else None  # the key's own sensor id
        frames = routed[1:]
        size = sum(len(f) for f in frames)
        if size > self.cfg.max_message_bytes:
            self._refused(owner, frames, wire.TOO_LARGE,
                          f"message of {size} bytes > max_message_bytes "
                          f"{self.cfg.max_message_bytes}", sender, now)
            return None
        buffers = [f.buffer for f in frames]
        try:
            header = wire.decode_header(buffers)
        except wire.WireError as exc:
            self._refused(owner, frames, exc.reason, str(exc), sender, now)
            return None
        sid = header["sid"]
        if (key and owner is None and sid not in self.bindings.keys
                and header.get("e", 0) > time.time_ns() + MAX_EPOCH_AHEAD_NS):
            # A key with no id claiming a free one does not get it with this batch, nor make
            # its refusal the loss of that id (in a cluster, another gateway may have given
            # the id to another key a moment ago).
            self._refused(None, frames, BAD_EPOCH, f"batch {header['seq']}: epoch "
                          f"{header.get('e')} is more than a day ahead: refused", sender, now)
            return None
        if key and owner != sid and not self._bind(key, sid, owner, header):
            self.penalty.strike(sender, now, SPOOFED)
            return None
        self.stats(sid)
        msg = Message(buffers, sid, self.label(sid), peer, header.get("e", 0), header["seq"],
                      header.get("b", 0), header.get("d", 0), header["n"], sender)
        if msg.epoch > time.time_ns() + MAX_EPOCH_AHEAD_NS:
            self.refuse(msg, BAD_EPOCH, f"batch {msg.seq}: epoch {msg.epoch} is more than a "
                        "day ahead of the hub's clock (the sensor's clock is wrong): refused")
            self.penalty.strike(sender, now, BAD_EPOCH)
            return None
        return msg

    def _refused(self, owner: str | None, frames: list[Any], reason: str,
                 detail: str, sender: Any, now: float) -> None:
        """A message refused before its header was trusted: counted for the key's own
        sensor when it has one (and told as its loss), else by what the header claims; a
        strike for its sender."""
        self.penalty.strike(sender, now, reason)
        if owner is None:
            self.bad(_sensor_of(frames), reason, detail)
            return
        self.stats(owner)
        self.bad(owner, reason, detail)
        self.lost(self.label(owner), reason, 1, 0)

    def _count_boxed(self, boxed: dict[Any, int]) -> None:
        """Count what intake() refused unread from boxed senders: once per sender and call
        (a flood of them costs one counter update, not one each), for the key's sensor
        (told as its loss) or, without one, as ``unknown``."""
        for sender, n in boxed.items():
            owner = self.bindings.ids.get(sender) if isinstance(sender, str) else None
            sid = owner or UNKNOWN_SENSOR
            self.stats(sid)
            self.bad(sid, PENALTY, f"{n} message(s) of {describe(sender)} refused unread: it "
                     "is in the penalty box for sending malformed batches", n)
            if owner is not None:
                self.lost(self.label(owner), PENALTY, n, 0)

    def _bind(self, key: str, sid: str, owner: str | None, header: dict[str, Any]) -> bool:
        """Whether ``key`` may send as ``sid`` (binding them if neither is bound yet)."""
        holder = self.bindings.keys.get(sid)
        if owner is not None:
            self.stats(owner)
            self.bad(owner, SPOOFED, f"key {key} (sensor {owner}) sent batch "
                     f"{header['seq']} as sensor {sid}: refused")
            self.lost(self.label(owner), SPOOFED, 1, header["n"])
            return False
        if holder is not None and self._allowed(holder):
            self.bad(sid, SPOOFED, f"key {key} sent batch {header['seq']} as sensor {sid}, "
                     f"which belongs to key {holder}: refused")
            return False
        if holder is not None:
            log.warning("sensor %s: now bound to key %s (its key %s left the allow-list)",
                        sid, key, holder)
        self.bindings.bind(sid, key)
        return True

    def _allowed(self, key: str) -> bool:
        auth = self.transport.auth if self.transport is not None else None
        return auth is None or auth.allowed("ingest", key.encode())

    def open(self, msg: Message) -> Received | None:
        """Split a message's body into its events (decoded by :meth:`events`)."""
        try:
            batch, raws = wire.decode_raw(msg.buffers)
        except wire.WireError as exc:
            self.refuse(msg, exc.reason, f"batch {msg.seq}: {exc}")
            self.penalty.strike(msg.sender, time.monotonic(), exc.reason)
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
                        batch.epoch, batch.common, msg.sender)

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
            self.lost(rec.label, exc.reason, 0, len(raws))
            self._strike(rec, exc.reason)
            return []
        checked = check(events, self.limits)
        bad = checked.refused
        if checked.unknown:
            self.bad(rec.label, UNKNOWN_FIELD, f"batch {rec.seq}: fields the schema does not "
                     f"know removed: {', '.join(sorted(set(checked.unknown))[:5])}",
                     len(checked.unknown))
        if checked.truncated:
            self.bad(rec.label, TRUNCATED, f"batch {rec.seq}: cut at the ingest limits "
                     f"(threatseer.truncated_fields): "
                     f"{', '.join(sorted(set(checked.truncated))[:5])}", len(checked.truncated))
        if bad:
            self.bad(rec.label, SCHEMA, f"batch {rec.seq}: {len(bad)} event(s) refused, "
                     f"first: {bad[0][1]}", len(bad))
            self.lost(rec.label, SCHEMA, 0, len(bad))
            if len(bad) == len(events):  # nothing good in it: malformed (hub/penalty.py)
                self._strike(rec, SCHEMA)
            skip = {i for i, _ in bad}
            events = [ev for i, ev in enumerate(events) if i not in skip]
        return events

    def _strike(self, rec: Received, reason: str) -> None:
        """A malformed batch is one strike for its sender, however many of its slices are."""
        if not rec.struck:
            rec.struck = True
            self.penalty.strike(rec.sender, time.monotonic(), reason)

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
