"""The sensor's on-disk spool: every batch stays here until the hub acknowledges it.

Why SQLite (WAL): one small transaction per batch (not per event) survives a sensor crash,
a restart resumes with the same epoch and sequence numbers, and the bound is enforced with one
DELETE of the oldest rows. ``synchronous=NORMAL`` survives the process dying (kill -9); a
power cut may lose the last batches before the WAL is synced, which the hub then reports as a
gap (see docs/transport.md).

The spool is bounded by bytes of event bodies. At the bound the oldest batches go and their
events are counted in ``dropped_events`` (reported in the sensor's health events); the hub
learns of the hole from the ``base`` sequence number in later headers and reports it too.

A full disk (or any write error) does not stop the sensor: batches the file does not take
are kept in memory, bounded by ``memory_max_bytes`` (beyond it the oldest batches go, counted
as above), sent and acknowledged from there, and written to the file as soon as it takes
writes again (tried at most once a second). ``disk_errors`` counts the failed writes. Batches
held in memory are lost if the sensor stops meanwhile; the hub reports that gap.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import time
from collections import OrderedDict, deque

log = logging.getLogger("threatseer.sensor.spool")

SPOOL_FILE = "spool.db"
DELETE_INTERVAL_S = 1.0
# ... or sooner once this much is acknowledged: one second of a burst (~10 MB) in a single
# DELETE walked every overflow page in one go and held the reader long enough to lose records.
DELETE_MAX_BYTES = 512 << 10
# Recent bodies kept in memory (besides the file) for their first send, at most this many
# bytes: a hub slow to acknowledge left a whole window of a flood's bodies here (~4 MiB,
# the sensor's peak RSS); older ones are read back from the file when sent or resent. A
# body's first send follows its append at once, so a few bodies are enough; the memory goes
# to the flood's batches instead (sensor/config.py batch_size).
CACHE_MAX_BYTES = 256 << 10
RETRY_DISK_S = 1.0  # a spool whose disk refused a write tries it again at most this often


class Spool:
    def __init__(self, path: str, max_bytes: int = 256 << 20, cache_batches: int = 64,
                 memory_max_bytes: int = 16 << 20) -> None:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        self.path = path
        self.max_bytes = max_bytes
        self.memory_max_bytes = memory_max_bytes
        # Batches the file did not take (disk full): seq -> (events, body), oldest first.
        self._memory: dict[int, tuple[int, bytes]] = {}
        self.memory_bytes = 0
        self.disk_errors = 0
        self._retry_at = 0.0
        db = self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        # Batches are written once and read back only to resend: a small page cache (the
        # default 2 MiB stayed resident after every burst).
        db.execute("PRAGMA cache_size=-256")
        db.execute("CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v INTEGER NOT NULL)")
        db.execute("CREATE TABLE IF NOT EXISTS batches (seq INTEGER PRIMARY KEY, "
                   "n INTEGER NOT NULL, body BLOB NOT NULL)")
        meta = dict(db.execute("SELECT k, v FROM meta"))
        if "epoch" not in meta:
            # A new spool is a new epoch: the hub then knows these sequence numbers restart.
            meta["epoch"] = time.time_ns()
            meta["next_seq"] = 1
            db.execute("INSERT INTO meta VALUES ('epoch', ?), ('next_seq', 1)", (meta["epoch"],))
        if "dropped_events" not in meta:
            meta["dropped_events"] = 0
            db.execute("INSERT INTO meta VALUES ('dropped_events', 0)")
        self.epoch: int = meta["epoch"]
        # meta next_seq is only brought up to date when acknowledged rows are deleted from an
        # emptied spool (and at drops): while batches are stored, the newest one says where
        # the sequence is.
        self._sizes: deque[tuple[int, int, int]] = deque(  # (seq, events, bytes), oldest first
            db.execute("SELECT seq, n, length(body) FROM batches ORDER BY seq"))
        self.count = len(self._sizes)
        self.events = sum(n for _, n, _ in self._sizes)
        self.bytes = sum(size for _, _, size in self._sizes)
        self.next_seq: int = max(meta["next_seq"],
                                 self._sizes[-1][0] + 1 if self._sizes else 0)
        self.first_seq: int = self._sizes[0][0] if self._sizes else self.next_seq
        self.dropped_events = 0  # by this process (health event deltas)
        self.dropped_batches = 0
        # by this spool since it was created (the epoch), told to the hub in headers ("d")
        self.dropped_total: int = meta["dropped_events"]
        self.dropped_total_base = self.dropped_total
        # Recent bodies, so a send right after append (the usual case) does not read the disk.
        self._cache: OrderedDict[int, tuple[int, bytes]] = OrderedDict()
        self._cache_batches = cache_batches
        self._cache_bytes = 0
        self._acked_upto = 0  # acknowledged, not yet deleted from the file
        self._deleted_at = 0.0
        self._undeleted_bytes = 0

    @property
    def sizes(self) -> deque[tuple[int, int, int]]:
        """``(seq, events, bytes)`` of every stored batch, oldest first (read only)."""
        return self._sizes

    @property
    def degraded(self) -> bool:
        """Some batches are held in memory because the file refused them."""
        return bool(self._memory)

    def append(self, count: int, body: bytes) -> int:
        """Store one batch; returns its sequence number. May drop the oldest (counted)."""
        seq = self.next_seq
        if self._memory and time.monotonic() >= self._retry_at:
            self._to_disk()
        stored = False
        if not self._memory:
            try:
                # One statement, one transaction: the cost a batch pays when the hub keeps up.
                self.db.execute("INSERT INTO batches VALUES (?, ?, ?)", (seq, count, body))
                stored = True
            except sqlite3.Error as exc:
                self._disk_failed("storing a batch", exc)
        if not stored:
            self._memory[seq] = (count, body)
            self.memory_bytes += len(body)
        self._sizes.append((seq, count, len(body)))
        self.next_seq = seq + 1
        if not self.count:
            self.first_seq = seq
        self.count += 1
        self.events += count
        self.bytes += len(body)
        cache = self._cache
        cache[seq] = (count, body)
        self._cache_bytes += len(body)
        while len(cache) > self._cache_batches or (
                self._cache_bytes > CACHE_MAX_BYTES and len(cache) > 1):
            self._cache_bytes -= len(cache.popitem(last=False)[1][1])
        if self.bytes > self.max_bytes or self.memory_bytes > self.memory_max_bytes:
            self._drop_oldest()
        return seq

    def _disk_failed(self, what: str, exc: Exception) -> None:
        self.disk_errors += 1
        if not self._memory and self._retry_at <= time.monotonic():
            log.error("spool %s: %s failed (%s): keeping batches in memory (at most %d MiB) "
                      "until the disk takes writes again", self.path, what, exc,
                      self.memory_max_bytes >> 20)
        self._retry_at = time.monotonic() + RETRY_DISK_S

    def _to_disk(self) -> None:
        """Write the batches held in memory to the file, all or none."""
        db = self.db
        try:
            db.execute("BEGIN")
            db.executemany("INSERT OR REPLACE INTO batches VALUES (?, ?, ?)",
                           [(seq, n, body) for seq, (n, body) in self._memory.items()])
            db.execute("UPDATE meta SET v = ? WHERE k = 'dropped_events'", (self.dropped_total,))
            db.execute("COMMIT")
        except sqlite3.Error as exc:
            if db.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    db.execute("ROLLBACK")
            self._disk_failed("writing the batches held in memory", exc)
            return
        log.warning("spool %s: the disk takes writes again: %d batches moved from memory",
                    self.path, len(self._memory))
        self._memory.clear()
        self.memory_bytes = 0
        self._retry_at = 0.0

    def _drop_oldest(self) -> None:
        """Delete the oldest batches until the spool is back under its bounds, on disk and in
        memory (never the newest one: a single batch larger than the bound is still kept).
        Always from the front, so what is left is one run of sequence numbers: the hub learns
        of the hole from ``base``."""
        sizes, memory = self._sizes, self._memory
        last = None
        while sizes:
            seq, n, size = sizes[0]
            if (self.bytes <= self.max_bytes and self.memory_bytes <= self.memory_max_bytes) \
                    or seq == self.next_seq - 1:
                break
            sizes.popleft()
            held = memory.pop(seq, None)
            if held is not None:
                self.memory_bytes -= len(held[1])
            last = seq
            self.count -= 1
            self.events -= n
            self.bytes -= size
            self.dropped_batches += 1
            self.dropped_events += n
        if last is not None:
            self.dropped_total = self.dropped_total_base + self.dropped_events
            self.first_seq = last + 1
            for seq in [s for s in self._cache if s <= last]:
                self._cache_bytes -= len(self._cache.pop(seq)[1])
            try:
                self.db.execute("BEGIN")
                self.db.execute("DELETE FROM batches WHERE seq <= ?", (last,))
                self.db.execute("UPDATE meta SET v = ? WHERE k = 'dropped_events'",
                                (self.dropped_total,))
                self.db.execute("UPDATE meta SET v = ? WHERE k = 'next_seq'", (self.next_seq,))
                self.db.execute("COMMIT")
            except sqlite3.Error as exc:  # the rows stay; after a restart they are resent
                if self.db.in_transaction:  # and the hub, past them, drops them
                    with contextlib.suppress(sqlite3.Error):
                        self.db.execute("ROLLBACK")
                self._disk_failed("dropping the oldest batches", exc)

    def ack(self, seq: int) -> int:
        """Forget every batch up to ``seq``; returns how many events that acknowledged."""
        if seq < self.first_seq or not self.count:
            return 0
        sizes = self._sizes
        n = size = left = 0
        while sizes and sizes[0][0] <= seq:
            _, events, nbytes = sizes.popleft()
            n += events
            size += nbytes
            left += 1
        self._acked_upto = seq
        self._undeleted_bytes += size
        now = time.monotonic()
        if (now - self._deleted_at >= DELETE_INTERVAL_S
                or self._undeleted_bytes >= DELETE_MAX_BYTES):
            self._delete_acked(now)
        self.count -= left
        self.events -= n
        self.bytes -= size
        self.first_seq = seq + 1 if self.count else self.next_seq
        cache = self._cache
        while cache and next(iter(cache)) <= seq:
            self._cache_bytes -= len(cache.popitem(last=False)[1][1])
        memory = self._memory
        while memory and next(iter(memory)) <= seq:
            self.memory_bytes -= len(memory.pop(next(iter(memory)))[1])
        return n

    def _delete_acked(self, now: float) -> None:
        """Remove acknowledged batches from the file: at most every DELETE_INTERVAL_S, as
        a transaction per acknowledgement cost as much as storing the batch. Acknowledged
        rows still on disk after a crash are resent and dropped by the hub (it keeps a
        ledger of what it has)."""
        self._deleted_at = now
        self._undeleted_bytes = 0
        seq = self._acked_upto
        if not seq:
            return
        db = self.db
        try:
            db.execute("BEGIN")
            db.execute("DELETE FROM batches WHERE seq <= ?", (seq,))
            if not self._sizes:  # empty: the sequence lives on in meta
                db.execute("UPDATE meta SET v = ? WHERE k = 'next_seq'", (self.next_seq,))
            db.execute("COMMIT")
        except sqlite3.Error as exc:  # tried again with the next acknowledgement
            if db.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    db.execute("ROLLBACK")
            self._disk_failed("deleting acknowledged batches", exc)
            return
        self._acked_upto = 0

    def get(self, seq: int) -> tuple[int, bytes] | None:
        """``(event count, body)`` of a stored batch, or None when it is gone."""
        hit = self._cache.get(seq) or self._memory.get(seq)
        if hit is not None:
            return hit
        try:
            row = self.db.execute("SELECT n, body FROM batches WHERE seq = ?",
                                  (seq,)).fetchone()
        except sqlite3.Error as exc:
            self._disk_failed("reading a batch", exc)
            return None
        return (row[0], bytes(row[1])) if row else None

    def close(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            self._delete_acked(time.monotonic())
            self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        self.db.close()
