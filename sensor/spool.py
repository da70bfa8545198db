"""The sensor's on-disk spool: every batch stays here until the hub acknowledges it.

Why SQLite (WAL): one small transaction per batch (not per event) survives a sensor crash,
a restart resumes with the same epoch and sequence numbers, and the bound is enforced with one
DELETE of the oldest rows. ``synchronous=NORMAL`` survives the process dying (kill -9); a
power cut may lose the last batches before the WAL is synced, which the hub then reports as a
gap (see docs/transport.md).

The spool is bounded by bytes of event bodies. At the bound the oldest batches go and their
events are counted in ``dropped_events`` (reported in the sensor's health events); the hub
learns of the hole from the ``base`` sequence number in later headers and reports it too.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from collections import OrderedDict, deque

SPOOL_FILE = "spool.db"
DELETE_INTERVAL_S = 1.0
# ... or sooner once this much is acknowledged: one second of a burst (~10 MB) in a single
# DELETE walked every overflow page in one go and held the reader long enough to lose records.
DELETE_MAX_BYTES = 512 << 10


class Spool:
    def __init__(self, path: str, max_bytes: int = 256 << 20, cache_batches: int = 64) -> None:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        self.path = path
        self.max_bytes = max_bytes
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
        self._acked_upto = 0  # acknowledged, not yet deleted from the file
        self._deleted_at = 0.0
        self._undeleted_bytes = 0

    def append(self, count: int, body: bytes) -> int:
        """Store one batch; returns its sequence number. May drop the oldest (counted)."""
        seq = self.next_seq
        # One statement, one transaction: the cost a batch pays when the hub keeps up.
        self.db.execute("INSERT INTO batches VALUES (?, ?, ?)", (seq, count, body))
        self._sizes.append((seq, count, len(body)))
        self.next_seq = seq + 1
        if not self.count:
            self.first_seq = seq
        self.count += 1
        self.events += count
        self.bytes += len(body)
        cache = self._cache
        cache[seq] = (count, body)
        if len(cache) > self._cache_batches:
            cache.popitem(last=False)
        if self.bytes > self.max_bytes:
            self._drop_oldest()
        return seq

    def _drop_oldest(self) -> None:
        """Delete the oldest batches until the spool is back under its bound (never the
        newest one: a single batch larger than the bound is still kept)."""
        sizes = self._sizes
        over = self.bytes - self.max_bytes
        last = None
        while sizes:
            seq, n, size = sizes[0]
            if over <= 0 or seq == self.next_seq - 1:
                break
            sizes.popleft()
            over -= size
            last = seq
            self.count -= 1
            self.events -= n
            self.bytes -= size
            self.dropped_batches += 1
            self.dropped_events += n
        if last is not None:
            self.dropped_total = self.dropped_total_base + self.dropped_events
            self.db.execute("BEGIN")
            self.db.execute("DELETE FROM batches WHERE seq <= ?", (last,))
            self.db.execute("UPDATE meta SET v = ? WHERE k = 'dropped_events'",
                            (self.dropped_total,))
            self.db.execute("UPDATE meta SET v = ? WHERE k = 'next_seq'", (self.next_seq,))
            self.db.execute("COMMIT")
            self.first_seq = last + 1
            for seq in [s for s in self._cache if s <= last]:
                del self._cache[seq]

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
            cache.popitem(last=False)
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
        self._acked_upto = 0
        db = self.db
        db.execute("BEGIN")
        db.execute("DELETE FROM batches WHERE seq <= ?", (seq,))
        if not self._sizes:  # empty: the sequence lives on in meta
            db.execute("UPDATE meta SET v = ? WHERE k = 'next_seq'", (self.next_seq,))
        db.execute("COMMIT")

    def get(self, seq: int) -> tuple[int, bytes] | None:
        """``(event count, body)`` of a stored batch, or None when it is gone."""
        hit = self._cache.get(seq)
        if hit is not None:
            return hit
        row = self.db.execute("SELECT n, body FROM batches WHERE seq = ?", (seq,)).fetchone()
        return (row[0], bytes(row[1])) if row else None

    def close(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            self._delete_acked(time.monotonic())
            self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        self.db.close()
