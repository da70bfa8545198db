"""SHA-256 of executables, computed once per file version, big ones on their own thread.

Hashing on every exec would cost more than the rest of the sensor; a file is hashed on first
sight and the result cached by (device, inode, size, mtime), so a replaced binary is hashed
again. Files over a size cap are skipped (the field is left out, never guessed).

A file up to ``inline_bytes`` (4 MiB with the CPU's SHA instructions, 1 MiB without:
sensor/digest.py) is hashed where it is first seen, ~3 ms. A bigger one would hold the
reader longer (a 64 MiB executable ~45 ms, ~0.2 s without SHA instructions: records pile up
in the kernel's ring), so it goes to a worker thread (the hash releases the GIL): :meth:`ExecutableHashes.lookup` returns :data:`PENDING` and the exec event waits, with
every event after it (the stream stays in kernel order), until the worker puts the digest in
it. :meth:`ExecutableHashes.fileno` becomes readable when one is done, so the reader's wait
includes it. An event that waited ``wait_s`` (or behind which ``max_held`` events piled up:
the reader's memory) goes without the field, counted in ``late`` and logged; the digest is
still cached for the next exec of that file.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import threading
import time
from collections import OrderedDict
from typing import Any

from threatseer.sensor.digest import SHA256_HARDWARE, FileTooBig, file_sha256

Key = tuple[int, int, int, int]
PENDING = "pending"  # lookup(): the digest is being computed; the event is registered
FIELD = "process.hash.sha256"
CHUNK = 256 << 10  # read and hashed at a time (one buffer per file)
# Hashed on the reader's thread up to this size: ~3 ms either way (1.5 GB/s with the CPU's
# SHA instructions, ~0.3 GB/s without). Above it, events wait behind the exec for the worker
# (memory held: up to MAX_HELD_FOR_HASH events in a flood), so fewer files go there.
INLINE_BYTES = (4 << 20) if SHA256_HARDWARE else (1 << 20)
log = logging.getLogger("threatseer.sensor.hashing")


class ExecutableHashes:
    def __init__(self, max_bytes: int = 64 * 1024 * 1024, cache_size: int = 8192,
                 inline_bytes: int = INLINE_BYTES, wait_s: float = 2.0) -> None:
        self.max_bytes = max_bytes
        self.cache_size = cache_size
        self.inline_bytes = inline_bytes
        self.wait_s = wait_s
        self._cache: OrderedDict[Key, str | None] = OrderedDict()
        self.hashed = 0
        self.skipped = 0
        self.late = 0  # events sent without their digest (it came too late)
        self.waits = 0  # events that waited for the worker
        # events waiting for a digest, in the order they were seen: (event, since)
        self.waiting: list[tuple[dict[str, Any], float]] = []
        self._lock = threading.Lock()
        self._jobs: queue.SimpleQueue[tuple[Key, str, int] | None] | None = None
        self._thread: threading.Thread | None = None
        self._by_key: dict[Key, list[dict[str, Any]]] = {}  # in the worker: who waits
        self._unhashable: set[int] = set()  # ids of waiting events that get no digest
        self._rd = self._wr = -1

    def sha256(self, path: str) -> str | None:
        """The digest, computed here on a miss (whatever the size)."""
        st = self._stat(path)
        if st is None:
            return None
        key, size = st
        cached = self._cached(key)
        if cached is not False:
            return cached  # type: ignore[return-value]
        return self._hash_and_store(key, path, size)

    def _hash_and_store(self, key: Key, path: str, size: int) -> str | None:
        digest = self._hash(path, size)
        self._store(key, digest)
        return digest

    def lookup(self, path: str, event: dict[str, Any]) -> str | None:
        """The digest of ``path`` for ``event``: cached or small enough to hash now (the
        digest or None), else :data:`PENDING`: the worker will set ``event``'s field."""
        st = self._stat(path)
        if st is None:
            return None
        key, size = st
        cached = self._cached(key)
        if cached is not False:
            return cached  # type: ignore[return-value]
        if size <= self.inline_bytes or size > self.max_bytes:
            return self._hash_and_store(key, path, size)
        with self._lock:
            waiters = self._by_key.get(key)
            first = waiters is None
            if first:
                waiters = self._by_key[key] = []
            waiters.append(event)
        self.waiting.append((event, time.monotonic()))
        self.waits += 1
        if first:
            self._start()
            self._jobs.put((key, path, size))  # type: ignore[union-attr]
        return PENDING

    # ---- the reader's side of the waiting events ----------------------------------------
    def fileno(self) -> int:
        """Readable when the worker finished a digest (call :meth:`ready`)."""
        if self._rd < 0:
            self._rd, self._wr = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        return self._rd

    def ready(self) -> None:
        """Drain the worker's signal."""
        if self._rd >= 0:
            with contextlib.suppress(BlockingIOError):
                os.read(self._rd, 4096)

    def first_waiting(self, now: float, held: int, max_held: int) -> dict[str, Any] | None:
        """The oldest event still waiting for its digest (None: none waits). Events that
        waited too long, or with too many behind them, are let go without it."""
        waiting = self.waiting
        while waiting:
            ev, since = waiting[0]
            if FIELD in ev or id(ev) in self._unhashable:
                self._unhashable.discard(id(ev))
                waiting.pop(0)
                continue
            if now - since >= self.wait_s or held >= max_held:
                waiting.pop(0)
                self._unhashable.discard(id(ev))
                self.late += 1
                log.warning("the SHA-256 of %s was not ready after %.1f s (%d events behind it):"
                            " its exec event goes without process.hash.sha256",
                            ev.get("process.executable"), now - since, held)
                continue
            return ev
        return None

    def due_in(self, now: float) -> float | None:
        """Seconds until the oldest waiting event is let go without its digest."""
        if not self.waiting:
            return None
        return max(0.0, self.waiting[0][1] + self.wait_s - now)

    # ---- internals ------------------------------------------------------------------------
    def _stat(self, path: str) -> tuple[Key, int] | None:
        try:
            st = os.stat(path)
        except OSError:
            return None
        return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns), st.st_size

    def _cached(self, key: Key) -> str | None | bool:
        """The cached digest (None: unhashable), False on a miss. Read without the lock, once
        per exec event: each OrderedDict call is one step under the GIL, and the worker may
        evict the entry between the two."""
        cache = self._cache
        cached = cache.get(key, False)
        if cached is not False:
            try:  # noqa: SIM105 - contextlib.suppress costs more than the lookup saves
                cache.move_to_end(key)
            except KeyError:
                pass
        return cached

    def _store(self, key: Key, digest: str | None) -> None:
        with self._lock:
            self._cache[key] = digest
            if len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)

    def _hash(self, path: str, size: int) -> str | None:
        if size > self.max_bytes:
            self.skipped += 1
            return None
        try:
            digest = file_sha256(path, self.max_bytes, CHUNK)
        except FileTooBig:  # it grew since it was seen
            self.skipped += 1
            return None
        except OSError:
            return None
        self.hashed += 1
        return digest

    def _start(self) -> None:
        """The worker, on the first big file (a thread costs RSS: not before)."""
        if self._thread is not None:
            return
        self.fileno()
        self._jobs = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._work, name="exe-hash", daemon=True)
        self._thread.start()

    def _work(self) -> None:
        jobs = self._jobs
        assert jobs is not None
        while (job := jobs.get()) is not None:
            key, path, size = job
            digest = self._hash(path, size)
            self._store(key, digest)
            with self._lock:
                waiters = self._by_key.pop(key, [])
            for ev in waiters:
                if digest:
                    ev[FIELD] = digest
                else:  # not hashable (gone, unreadable): do not wait for it
                    self._unhashable.add(id(ev))
            with contextlib.suppress(BlockingIOError):  # a wakeup is pending already
                os.write(self._wr, b"x")

    def close(self) -> None:
        if self._thread is not None and self._jobs is not None:
            self._jobs.put(None)
            self._thread.join(5)
            self._thread = None
        if self._rd >= 0:
            os.close(self._rd)
            os.close(self._wr)
            self._rd = self._wr = -1
