"""Fleet-wide profiles: each scorer's profile store is a replica of one grow-only set.

What a subject has been seen doing only grows (behaviour items), its learning window's start
only moves earlier and "learned" only goes from false to true: a state-based CRDT whose merge
is union / min / or. Each scorer publishes what it learns to the compacted profiles topic and
applies everyone's records (its own included), so replicas converge whatever the order and
however often a record is read; a replayed observation changes nothing.

Records (msgpack maps; the key makes compaction keep exactly what the merge needs):
  key ``subject \\x1f item``              {"s": subject, "i": item, "t": first seen}
  key ``subject \\x1f\\x1fmeta \\x1f name``  {"s": subject, "f": first seen, "l": learned at|nil}
A behaviour item is an element of the set (one key each); a subject's learning state is kept
per replica (its latest view), and merged by min/or on read.

Records are untrusted input like any other: wrong types or sizes are counted and skipped.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import deque
from typing import Any

import msgspec
from confluent_kafka import TopicPartition

from threatseer.hub.cluster.config import ClusterConfig
from threatseer.hub.cluster.kafka import consumer, producer, take
from threatseer.hub.engines.profile import ProfileEngine

log = logging.getLogger("threatseer.hub.cluster.profiles")
SEP = "\x1f"
MAX_SUBJECT = 1024
MAX_ITEM = 4096
PUBLISH_INTERVAL_S = 0.1
_pack = msgspec.msgpack.Encoder().encode
_unpack = msgspec.msgpack.Decoder(dict[str, Any]).decode


def _time(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and 0 <= value < 1e11 else None


class ProfileReplicator:
    """Publishes ``engine``'s learning and merges other replicas' into it.

    :meth:`publish` and :meth:`apply` run on the pipeline thread (the engine is not
    thread-safe); a reader thread only decodes records into an inbox.
    """

    def __init__(self, cfg: ClusterConfig, engine: ProfileEngine) -> None:
        self.cfg = cfg
        self.engine = engine
        self.name = cfg.member()
        self.producer = producer(cfg, **{"enable.idempotence": True, "acks": "all",
                                          "linger.ms": 5, "compression.type": "lz4"})
        self._outbox: list[tuple[str, str, float]] = []
        self._sent_meta: dict[str, tuple[float, float | None]] = {}
        self._inbox: deque[dict[str, Any]] = deque()
        self._last_publish = 0.0
        self.published = self.applied = self.bad_records = 0
        self._stop = threading.Event()
        engine.on_learn = self._outbox.extend
        self._thread = threading.Thread(target=self._read, name="profile-replica",
                                        daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.publish(time.time(), force=True)
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)
        self.producer.flush(10)

    # -- pipeline thread ------------------------------------------------------------------
    def publish(self, now: float, force: bool = False) -> None:
        """Send what this replica learned since the last call (at most every 100 ms)."""
        if not force and now - self._last_publish < PUBLISH_INTERVAL_S:
            return
        self._last_publish = now
        produce, topic = self.producer.produce, self.cfg.profiles_topic
        for subject, item, ts in self._outbox:
            produce(topic, key=f"{subject}{SEP}{item}".encode(),
                    value=_pack({"s": subject, "i": item, "t": ts}))
        self.published += len(self._outbox)
        self._outbox.clear()
        sent = self._sent_meta
        for subject, prof in self.engine.changed().items():
            meta = (prof.first_seen, prof.learned_at if prof.learned else None)
            if sent.get(subject) != meta:
                sent[subject] = meta
                produce(topic, key=f"{subject}{SEP}{SEP}meta{SEP}{self.name}".encode(),
                        value=_pack({"s": subject, "f": meta[0], "l": meta[1]}))
                self.published += 1
        self.producer.poll(0)

    def apply(self) -> int:
        """Merge the records read since the last call into the engine; returns how many."""
        inbox, engine = self._inbox, self.engine
        n = 0
        while inbox:
            rec = inbox.popleft()
            subject = rec["s"]
            if "i" in rec:
                prof = engine.profiles.get(subject)
                first = prof.first_seen if prof is not None else rec["t"]
                prof = engine.merge(subject, first, None, [(rec["i"], rec["t"])])
            else:
                prof = engine.merge(subject, rec["f"], rec["l"], [])
            # what we now hold came from the topic: no need to send it back
            self._sent_meta[subject] = (prof.first_seen,
                                        prof.learned_at if prof.learned else None)
            n += 1
        self.applied += n
        return n

    # -- reader thread --------------------------------------------------------------------
    def _read(self) -> None:
        c = consumer(self.cfg, **{"group.id": "threatseer-profiles-" + uuid.uuid4().hex,
                                  "enable.auto.commit": False, "fetch.wait.max.ms": 50})
        try:
            meta = c.list_topics(self.cfg.profiles_topic, timeout=10)
            parts = meta.topics[self.cfg.profiles_topic].partitions
            c.assign([TopicPartition(self.cfg.profiles_topic, p, 0) for p in parts])
            while not self._stop.is_set():
                for m in take(c, 1000, 0.1):
                    if not m.error():
                        self._decode(m.value())
        except Exception:
            log.exception("profile replica reader failed")
        finally:
            c.close()

    def _decode(self, value: bytes | None) -> None:
        try:
            rec = _unpack(value or b"")
        except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
            self.bad_records += 1
            return
        subject = rec.get("s")
        if not isinstance(subject, str) or not 0 < len(subject) <= MAX_SUBJECT:
            self.bad_records += 1
            return
        if "i" in rec:
            item, ts = rec.get("i"), _time(rec.get("t"))
            if not isinstance(item, str) or not 0 < len(item) <= MAX_ITEM or ts is None:
                self.bad_records += 1
                return
            self._inbox.append({"s": subject, "i": item, "t": ts})
            return
        first, learned = _time(rec.get("f")), rec.get("l")
        if first is None or (learned is not None and _time(learned) is None):
            self.bad_records += 1
            return
        self._inbox.append({"s": subject, "f": first, "l": _time(learned)})

    def status(self) -> dict[str, Any]:
        return {"published": self.published, "applied": self.applied,
                "bad_records": self.bad_records, "pending": len(self._inbox)}
