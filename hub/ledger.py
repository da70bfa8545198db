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

The ledger also keeps which CURVE key each sensor id belongs to (``bindings``), so that after
a restart too one allowed key cannot take over another sensor's id and sequence (see
:mod:`threatseer.hub.ingest`). A binding is made at the key's first batch and committed with
that batch, before its ack.

What it keeps is bounded: one state row and one binding per sensor, and of the ``scored`` and
``gaps`` records only each sensor's last ``keep_batches`` rows (and none older than
``keep_days``). Deduplication needs the state alone; the records say what happened lately.
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


class MemoryBindings:
    """Sensor id <-> CURVE key bindings in memory: an Ingest's without a ledger (tests, tools),
    and the :class:`Ledger`'s view of its durable ones."""

    def __init__(self) -> None:
        self.keys: dict[str, str] = {}  # sensor id -> CURVE key (Z85)
        self.ids: dict[str, str] = {}  # CURVE key -> sensor id

    def bind(self, sid: str, key: str) -> None:
        """``sid`` belongs to ``key`` from now on; whatever either was bound to before is
        released."""
        old_sid = self.ids.pop(key, None)
        if old_sid is not None:
            self.keys.pop(old_sid, None)
        old_key = self.keys.get(sid)
        if old_key is not None:
            self.ids.pop(old_key, None)
        self.keys[sid] = key
        self.ids[key] = sid


class Ledger(MemoryBindings):
    def __init__(self, path: str, synchronous: str = "normal", keep_days: float = 7.0,
                 keep_batches: int = 1000) -> None:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        self.path = path
        self.keep_s = keep_days * 86400
        self.keep_batches = keep_batches
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
        # (sid, rowid) order: a sensor's oldest records are found without a scan
        db.execute("CREATE INDEX IF NOT EXISTS scored_by_sensor ON scored (sid)")
        db.execute("CREATE INDEX IF NOT EXISTS gaps_by_sensor ON gaps (sid)")
        db.execute("CREATE TABLE IF NOT EXISTS bindings (sid TEXT PRIMARY KEY, "
                   "key TEXT NOT NULL UNIQUE, since REAL NOT NULL)")
        self.state = self._load()
        super().__init__()
        self._load_bindings()
        self._bound: dict[str, str] = {}  # sid -> key, bound since the last commit
        self._dirty: set[str] = set()
        self._scored: list[tuple[str, int, int, int, int, float]] = []
        self._gaps: list[tuple[str, int, int, int, float]] = []
        self.commits = 0

    def _load(self) -> dict[str, SensorState]:
        return {sid: SensorState(epoch, high, dropped) for sid, epoch, high, dropped
                in self.db.execute("SELECT sid, epoch, high, dropped FROM sensors")}

    def _load_bindings(self) -> None:
        self.keys = dict(self.db.execute("SELECT sid, key FROM bindings"))
        self.ids = {key: sid for sid, key in self.keys.items()}

    def bind(self, sid: str, key: str) -> None:
        """``sid`` belongs to ``key`` from now on (durable with the next :meth:`commit`);
        whatever either was bound to before is released."""
        super().bind(sid, key)
        self._bound[sid] = key

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
        if not self._dirty and not self._bound:
            return
        now = time.time()
        db = self.db
        db.execute("BEGIN")
        try:
            if self._bound:
                # a key moving to a new id, or an id to a new key: the old rows go first
                db.executemany("DELETE FROM bindings WHERE sid = ? OR key = ?",
                               list(self._bound.items()))
                db.executemany("INSERT INTO bindings VALUES (?, ?, ?)",
                               [(sid, key, now) for sid, key in self._bound.items()])
            db.executemany("INSERT OR REPLACE INTO sensors VALUES (?, ?, ?, ?, ?)",
                           [(sid, self.state[sid].epoch, self.state[sid].high,
                             self.state[sid].dropped, now) for sid in self._dirty])
            if self._scored:
                db.executemany("INSERT INTO scored VALUES (?, ?, ?, ?, ?, ?)", self._scored)
            if self._gaps:
                db.executemany("INSERT INTO gaps VALUES (?, ?, ?, ?, ?)", self._gaps)
            self._expire(now)
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:  # SQLite may have rolled back already (e.g. disk full)
                db.execute("ROLLBACK")
            # Back to what is durable: those batches were not acknowledged and come back.
            self.state = self._load()
            self._load_bindings()
            self._bound.clear()
            self._dirty.clear()
            self._scored.clear()
            self._gaps.clear()
            raise
        self._bound.clear()
        self._dirty.clear()
        self._scored.clear()
        self._gaps.clear()
        self.commits += 1

    def _expire(self, now: float) -> None:
        """Keep each sensor's last ``keep_batches`` records (one indexed DELETE per sensor of
        this cycle), and expire older ones a few at a time (more than a cycle adds): never
        one big scan."""
        db = self.db
        for table in ("scored", "gaps"):
            sids = {row[0] for row in (self._scored if table == "scored" else self._gaps)}
            db.executemany(
                f"DELETE FROM {table} WHERE sid = ? AND rowid <= (SELECT rowid FROM {table} "
                "WHERE sid = ? ORDER BY rowid DESC LIMIT 1 OFFSET ?)",
                [(sid, sid, self.keep_batches) for sid in sids])
        db.execute("DELETE FROM scored WHERE rowid IN (SELECT rowid FROM scored ORDER BY "
                   "rowid LIMIT 200) AND at < ?", (now - self.keep_s,))
        db.execute("DELETE FROM gaps WHERE rowid IN (SELECT rowid FROM gaps ORDER BY "
                   "rowid LIMIT 200) AND at < ?", (now - self.keep_s,))

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


def refused_event(sensor_id: str, reason: str, batches: int, events: int) -> dict[str, Any]:
    """The ``sensor-loss`` event of what the hub refused from a sensor (``reason``: an ingest
    counter label) since the last one: ``batches`` whole batches, ``events`` events in them
    or refused alone (0 when not known)."""
    category, types = ecs.CATEGORIES[ecs.SENSOR_LOSS]
    now = dt.datetime.now(dt.UTC)
    what = f"{batches} batches" if batches else f"{events} events"
    return {
        "@timestamp": now.isoformat(timespec="microseconds").replace("+00:00", "Z"),
        "event.kind": "event", "event.category": category, "event.type": types,
        "event.action": ecs.SENSOR_LOSS,
        "event.id": f"{sensor_id}:refused:{reason}:{time.time_ns()}",
        "agent.id": sensor_id,
        "threatseer.loss.events": events,
        "threatseer.loss.batches": batches,
        "threatseer.loss.reason": f"refused by the hub ({reason}): {what} from this sensor "
                                  "were not scored (see the hub's log and status)",
        "threatseer.loss.counter": f"hub_refused_{reason}",
    }
