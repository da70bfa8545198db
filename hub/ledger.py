"""The hub's delivery ledger: per sensor (epoch, highest scored sequence), durably.

Why: a sensor resends whatever the hub has not acknowledged, so after a hub crash the same
batch can arrive twice. The hub scores a batch, then commits in ONE SQLite transaction the
new per-sensor state and a record of the scored batch (``scored``: sensor, epoch, seq, events
in, events emitted), and only then acknowledges it. A batch whose record committed is never
scored again (its sequence number is at or below the state); one that did not commit is not
acknowledged and comes back. One transaction per pipeline cycle (up to
``max_batches_per_cycle`` batches), never per event.

Batches of a sensor are taken strictly in order: ``seq == high + 1`` is scored; ``seq <=
high`` is a duplicate (acknowledged again, not scored); ``seq > high + 1`` waits for the
sender's go-back resend, unless the sender says (``base``) it no longer has the batches in
between: that gap is final and reported as a loss event.
"""

from __future__ import annotations

import datetime as dt
import os
import sqlite3
import time
from dataclasses import dataclass
from typing import Any

from threatseer.common import ecs

NEW, DUPLICATE, AHEAD, STALE = "new", "duplicate", "ahead", "stale"


@dataclass(slots=True)
class SensorState:
    epoch: int
    high: int  # highest sequence number scored and committed (or given up as lost)
    dropped: int = 0  # the sender's spool-dropped event count at the last reported gap


@dataclass(slots=True)
class Verdict:
    kind: str
    lost_batches: int = 0  # a final gap before this batch (reported as a loss event)
    lost_events: int = 0  # events in it, when the sender counted them (0: unknown)
    restarted: bool = False  # a new epoch of a known sensor


class Ledger:
    def __init__(self, path: str, synchronous: str = "normal", keep_days: float = 7.0) -> None:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        self.path = path
        self.keep_s = keep_days * 86400
        db = self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute(f"PRAGMA synchronous={synchronous.upper()}")
        db.execute("CREATE TABLE IF NOT EXISTS sensors (sid TEXT PRIMARY KEY, "
                   "epoch INTEGER NOT NULL, high INTEGER NOT NULL, dropped INTEGER NOT NULL, "
                   "updated REAL NOT NULL)")
        # rowid order is commit order, so expiry deletes from the front in small steps
        db.execute("CREATE TABLE IF NOT EXISTS scored (sid TEXT NOT NULL, epoch INTEGER NOT "
                   "NULL, seq INTEGER NOT NULL, events_in INTEGER NOT NULL, emitted INTEGER "
                   "NOT NULL, at REAL NOT NULL, UNIQUE (sid, epoch, seq))")
        db.execute("CREATE TABLE IF NOT EXISTS gaps (sid TEXT NOT NULL, epoch INTEGER NOT NULL, "
                   "first INTEGER NOT NULL, batches INTEGER NOT NULL, at REAL NOT NULL)")
        self.state = self._load()
        self._dirty: set[str] = set()
        self._scored: list[tuple[str, int, int, int, int, float]] = []
        self._gaps: list[tuple[str, int, int, int, float]] = []
        self.commits = 0

    def _load(self) -> dict[str, SensorState]:
        return {sid: SensorState(epoch, high, dropped) for sid, epoch, high, dropped
                in self.db.execute("SELECT sid, epoch, high, dropped FROM sensors")}

    def admit(self, sid: str, epoch: int, seq: int, base: int, dropped: int = 0) -> Verdict:
        """What to do with batch ``seq`` of ``sid``/``epoch`` (see the module doc); a final
        gap moves the state past it (committed with the next :meth:`commit`)."""
        st = self.state.get(sid)
        restarted = False
        if st is None or st.epoch != epoch:
            if st is not None and epoch < st.epoch:
                return Verdict(STALE)
            restarted = st is not None
            st = self.state[sid] = SensorState(epoch, 0)
            self._dirty.add(sid)
        if seq <= st.high:
            return Verdict(DUPLICATE, restarted=restarted)
        lost = lost_events = 0
        if seq > st.high + 1:
            # The sender can resend from `base` on (0: it cannot resend anything).
            first_available = min(base, seq) if base else seq
            if first_available > st.high + 1:
                lost = first_available - 1 - st.high
                lost_events = max(0, dropped - st.dropped)
                self._gaps.append((sid, epoch, st.high + 1, lost, time.time()))
                st.high = first_available - 1
                st.dropped = max(st.dropped, dropped)
                self._dirty.add(sid)
            if seq > st.high + 1:
                return Verdict(AHEAD, lost, lost_events, restarted)
        return Verdict(NEW, lost, lost_events, restarted)

    def scored(self, sid: str, epoch: int, seq: int, events_in: int, emitted: int) -> None:
        """Batch ``seq`` was scored; durable with the next :meth:`commit`."""
        st = self.state[sid]
        st.high = seq
        self._dirty.add(sid)
        self._scored.append((sid, epoch, seq, events_in, emitted, time.time()))

    def commit(self) -> None:
        if not self._dirty:
            return
        now = time.time()
        db = self.db
        db.execute("BEGIN")
        try:
            db.executemany("INSERT OR REPLACE INTO sensors VALUES (?, ?, ?, ?, ?)",
                           [(sid, self.state[sid].epoch, self.state[sid].high,
                             self.state[sid].dropped, now) for sid in self._dirty])
            if self._scored:
                db.executemany("INSERT INTO scored VALUES (?, ?, ?, ?, ?, ?)", self._scored)
            if self._gaps:
                db.executemany("INSERT INTO gaps VALUES (?, ?, ?, ?, ?)", self._gaps)
            # expire old records a few at a time (more than a cycle adds): never one big scan
            db.execute("DELETE FROM scored WHERE rowid IN (SELECT rowid FROM scored ORDER BY "
                       "rowid LIMIT 200) AND at < ?", (now - self.keep_s,))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            # Back to what is durable: those batches were not acknowledged and come back.
            self.state = self._load()
            self._dirty.clear()
            self._scored.clear()
            self._gaps.clear()
            raise
        self._dirty.clear()
        self._scored.clear()
        self._gaps.clear()
        self.commits += 1

    def close(self) -> None:
        try:
            self.commit()
        finally:
            self.db.close()


def gap_event(sensor_id: str, epoch: int, seq: int, batches: int,
              events: int = 0) -> dict[str, Any]:
    """The ``sensor-loss`` event of a final gap: ``batches`` batches before ``seq`` holding
    ``events`` events, as counted by the sender's spool (0 when it could not count them, e.g.
    a spool lost with its disk: ``threatseer.loss.batches`` still says the size)."""
    category, types = ecs.CATEGORIES[ecs.SENSOR_LOSS]
    return {
        "@timestamp": dt.datetime.now(dt.UTC).isoformat(timespec="microseconds")
        .replace("+00:00", "Z"),
        "event.kind": "event", "event.category": category, "event.type": types,
        "event.action": ecs.SENSOR_LOSS,
        "event.id": f"{sensor_id}:gap:{epoch}:{seq}",
        "agent.id": sensor_id,
        "threatseer.loss.events": events,
        "threatseer.loss.batches": batches,
        "threatseer.loss.reason": f"transport gap: {batches} batches before batch {seq} "
                                  "never reached the hub and can no longer be resent",
        "threatseer.loss.counter": "hub_sequence_gap",
    }
