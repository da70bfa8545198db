"""Sensor id <-> CURVE key bindings shared by every gateway of a cluster, kept in Kafka.

Why: a sensor fails over between gateways, so a binding made at one gateway must hold at all
of them. A key that bound ``sensor-a`` at gateway A must not take ``sensor-a`` at gateway B,
and two gateways that see a new id at the same moment from two keys must not both give it
away (the hub's rule, :mod:`threatseer.hub.ingest`, for a whole cluster).

How: one log, the bindings topic (one partition, kept forever), of *claims*. A claim says
"``sid`` belongs to ``key``, if ``sid``'s holder is still ``prev`` (empty: nobody) and
``key`` holds no id". Every gateway reads the whole log in order and applies each claim whose
condition holds at its place in the log; the others are void. The same log gives every gateway
the same bindings, so of two claims made at once (neither gateway had read the other's yet)
the first in the log wins everywhere and the second is void everywhere: first writer wins,
decided the same way by each reader, with nothing asked of the broker but one ordered
partition.

A gateway does not act on its own claim before it has read it back: the batches of an id
whose claim is pending are held (not produced, not acknowledged) and, once the claim is read,
produced (won) or refused as ``spoofed`` (void). Meanwhile the gateway itself treats the claim
as made (:attr:`SharedBindings.keys`/``ids`` are the log's bindings plus the pending claims),
so it refuses a second claim on either side at once.

Why not a compacted topic: compaction keeps a key's *last* record, so a void claim written
after the winning one would replace it and a gateway reading the compacted log later would
decide otherwise. The log is small without it: a claim is written only for an id and a key
that are both free (or an id whose key left the allow-list), so one record per binding ever
made (plus lost races and one barrier per gateway start), the size of the allow-lists'
history, never of the traffic.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import msgspec
from confluent_kafka import KafkaError, TopicPartition

from threatseer.hub.cluster.config import ClusterConfig
from threatseer.hub.cluster.kafka import BARRIER, ClusterError, consumer, producer

log = logging.getLogger("threatseer.hub.cluster.bindings")
MAX_HELD = 1000  # batches held per pending claim; later ones are dropped (the sensor resends)
_pack = msgspec.msgpack.Encoder().encode


class ClaimRecord(msgspec.Struct, forbid_unknown_fields=False):
    k: str  # the key (Z85) claiming the id (the record's Kafka key is the id)
    p: str = ""  # the holder the claim replaces ("" = the id is free)
    n: str = ""  # nonce: the claiming gateway finds its own claim by it
    g: str = ""  # the claiming gateway's name (for the log)


_unpack = msgspec.msgpack.Decoder(ClaimRecord).decode


@dataclass
class Claim:
    """A claim this gateway wrote and has not read back yet, and the batches it holds."""

    key: str
    prev: str
    nonce: str
    since: float
    held: list[Any] = field(default_factory=list)
    dropped: int = 0
    expired: bool = False  # given up unread (the broker was away), not decided by the log


class BindingLog:
    """The bindings a claims log decides (see the module doc): apply records in log order."""

    def __init__(self) -> None:
        self.keys: dict[str, str] = {}  # sensor id -> key
        self.ids: dict[str, str] = {}  # key -> sensor id

    def apply(self, sid: str, claim: ClaimRecord) -> bool:
        """Apply ``claim`` on ``sid`` if its condition holds here; whether it did."""
        if self.keys.get(sid, "") != claim.p or claim.k in self.ids or not claim.k:
            return False
        if claim.p:
            self.ids.pop(claim.p, None)
        self.keys[sid] = claim.k
        self.ids[claim.k] = sid
        return True


class SharedBindings:
    """What :class:`threatseer.hub.ingest.Ingest` needs of its bindings (``keys``, ``ids``,
    ``bind``), over the cluster's bindings topic. Used from the gateway's loop thread only."""

    def __init__(self, ccfg: ClusterConfig, member: str, timeout_s: float = 30.0) -> None:
        self.ccfg = ccfg
        self.topic = ccfg.bindings_topic
        self.member = member
        self.timeout_s = timeout_s
        self.log = BindingLog()
        self.pending: dict[str, Claim] = {}  # sid -> our claim on it, not read back yet
        self.keys: dict[str, str] = {}
        self.ids: dict[str, str] = {}
        self.claims = self.won = self.lost = self.expired = 0
        self._errors: list[str] = []
        self._producer = producer(ccfg, **{
            "enable.idempotence": True, "acks": "all", "linger.ms": 0,
            "client.id": f"threatseer-bindings-{member}"})
        self._consumer = consumer(ccfg, **{
            "group.id": "threatseer-bindings-" + uuid.uuid4().hex,
            "enable.auto.commit": False, "enable.partition.eof": False,
            "fetch.wait.max.ms": 10, "client.id": f"threatseer-bindings-{member}"})
        try:
            self._consumer.assign([TopicPartition(self.topic, 0, 0)])
            self._read_to_barrier()
        except BaseException:
            self.close()
            raise
        self._view()

    # -- reading the log -------------------------------------------------------------------
    def _read_to_barrier(self) -> None:
        """Read the log from its start up to a barrier written now: every binding made
        before this gateway started is known before it takes a batch."""
        nonce = uuid.uuid4().bytes
        self._producer.produce(self.topic, key=BARRIER, value=nonce, partition=0)
        if self._producer.flush(self.timeout_s):
            raise ClusterError(f"{self.topic}: cannot write to the bindings topic")
        deadline = time.monotonic() + self.timeout_s
        while time.monotonic() < deadline:
            for msg in self._consumer.consume(500, 0.2):
                if msg.error() is None and msg.key() == BARRIER and msg.value() == nonce:
                    return
                self._record(msg)
        raise ClusterError(f"{self.topic}: the barrier did not come back within "
                           f"{self.timeout_s:.0f} s")

    def _record(self, msg: Any) -> tuple[str, bool] | None:
        """Apply one record; (sid, won) when it is one of our pending claims."""
        if msg.error() is not None:
            if msg.error().code() != KafkaError._PARTITION_EOF:
                log.warning("bindings topic: %s", msg.error())
            return None
        if msg.key() == BARRIER:
            return None
        try:
            sid = msg.key().decode()
            claim = _unpack(msg.value() or b"")
        except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError,
                AttributeError):
            log.warning("bindings topic: record at offset %d is not a claim: ignored",
                        msg.offset())
            return None
        applied = self.log.apply(sid, claim)
        if applied:
            log.info("sensor %s: bound to key %s (claimed at gateway %s)", sid, claim.k,
                     claim.g or "?")
        mine = self.pending.get(sid)
        if mine is not None and mine.nonce == claim.n:
            return sid, applied
        return None

    def poll(self) -> list[tuple[str, bool, Claim]]:
        """Read what the log has gained (without waiting); return our claims decided by it
        as ``(sid, won, claim)``, and those given up after ``timeout_s`` as lost."""
        decided = []
        changed = False
        for msg in self._consumer.consume(500, 0):
            changed = True
            got = self._record(msg)
            if got is not None:
                claim = self.pending.pop(got[0])
                decided.append((got[0], got[1], claim))
                if got[1]:
                    self.won += 1
                else:
                    self.lost += 1
        now = time.monotonic()
        for sid, claim in list(self.pending.items()):
            if now - claim.since > self.timeout_s:
                # Not read back (the broker is away): its batches go unacknowledged and come
                # back; if the claim lands later, the log decides it as for anyone else.
                del self.pending[sid]
                claim.expired = True
                self.expired += 1
                decided.append((sid, False, claim))
                changed = True
                log.warning("sensor %s: claim for key %s not read back within %.0f s",
                            sid, claim.key, self.timeout_s)
        for err in self._errors:
            log.warning("bindings topic: claim not stored: %s", err)
        self._errors.clear()
        if changed:
            self._view()
        return decided

    def _view(self) -> None:
        """``keys``/``ids``: the log's bindings with our pending claims on top."""
        keys, ids = dict(self.log.keys), dict(self.log.ids)
        for sid, claim in self.pending.items():
            _put(keys, ids, sid, claim.key)
        self.keys, self.ids = keys, ids

    # -- claiming --------------------------------------------------------------------------
    def bind(self, sid: str, key: str) -> None:
        """Claim ``sid`` for ``key`` (replacing its holder in this gateway's view, as the
        ingest decided); the claim is decided when :meth:`poll` reads it back."""
        if sid in self.pending:  # cannot happen: the pending claim's key holds sid here
            return
        claim = Claim(key, self.log.keys.get(sid, ""), uuid.uuid4().hex, time.monotonic())
        self.pending[sid] = claim
        _put(self.keys, self.ids, sid, key)
        self.claims += 1

        def delivered(err: KafkaError | None, _m: Any) -> None:
            if err is not None:
                self._errors.append(f"sensor {sid}: {err.str()}")

        self._producer.produce(self.topic, key=sid.encode(), partition=0, on_delivery=delivered,
                               value=_pack(ClaimRecord(key, claim.prev, claim.nonce,
                                                       self.member)))
        self._producer.poll(0)

    def hold(self, sid: str, item: Any) -> bool:
        """Keep ``item`` (a batch of ``sid``) until ``sid``'s pending claim is decided;
        False when ``sid`` has none. Beyond MAX_HELD the batch is dropped unacknowledged."""
        claim = self.pending.get(sid)
        if claim is None:
            return False
        if len(claim.held) < MAX_HELD:
            claim.held.append(item)
        else:
            claim.dropped += 1
        return True

    def counters(self) -> dict[str, int]:
        return {"bound": len(self.log.keys), "pending": len(self.pending),
                "claims": self.claims, "won": self.won, "lost": self.lost,
                "expired": self.expired}

    def close(self) -> None:
        try:
            self._producer.flush(5)
        finally:
            self._consumer.close()


def _put(keys: dict[str, str], ids: dict[str, str], sid: str, key: str) -> None:
    """Bind ``sid`` to ``key`` in a view, releasing what either was bound to."""
    old_sid = ids.pop(key, None)
    if old_sid is not None:
        keys.pop(old_sid, None)
    old_key = keys.get(sid)
    if old_key is not None:
        ids.pop(old_key, None)
    keys[sid] = key
    ids[key] = sid
