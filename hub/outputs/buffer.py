"""The bounded queue between the pipeline and one output's worker, with its overflow policy.

- block: ``put`` waits for room (back-pressure into the pipeline; the user asked for it).
- drop-oldest: ``put`` never waits; the oldest queued event is dropped and counted.
- spill: ``put`` never waits; once the queue is full, events go to a bounded spill file and
  keep going there until the worker has replayed it, so delivery order is kept. Beyond the
  file's bound new events are dropped and counted.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Any

from .spill import SpillFile


class EventBuffer:
    def __init__(self, maxsize: int, policy: str, spill: SpillFile | None = None) -> None:
        if policy == "spill" and spill is None:
            raise ValueError("the spill policy needs a spill file")
        self.maxsize = maxsize
        self.policy = policy
        self.spill = spill
        self.dropped = 0
        self.spilled = 0
        self._q: deque[dict[str, Any]] = deque()
        self._t: deque[float] = deque()  # when each queued event came (monotonic)
        # When the events of the last batch came (empty for a batch from the spill file,
        # whose arrival is not kept): the worker's delivery latency.
        self.batch_times: list[float] = []
        self._lock = threading.Lock()
        self._not_empty = threading.Condition(self._lock)
        self._not_full = threading.Condition(self._lock)
        self._closed = False
        self._batch_from_spill = False

    @property
    def depth(self) -> int:
        """Events waiting: in memory plus in the spill file."""
        return len(self._q) + (self.spill.pending if self.spill else 0)

    def put(self, event: dict[str, Any], now: float | None = None) -> None:
        """Queue ``event``, which came at ``now`` (monotonic; default: now)."""
        if now is None:
            now = time.monotonic()
        with self._lock:
            if self._closed:
                self.dropped += 1
                return
            spill = self.spill
            if spill is not None and (spill.pending or len(self._q) >= self.maxsize):
                if spill.append(event):
                    self.spilled += 1
                else:
                    self.dropped += 1
                self._not_empty.notify()
                return
            if len(self._q) >= self.maxsize:
                if self.policy == "block":
                    while len(self._q) >= self.maxsize and not self._closed:
                        self._not_full.wait()
                    if self._closed:
                        self.dropped += 1
                        return
                else:
                    self._q.popleft()
                    self._t.popleft()
                    self.dropped += 1
            self._q.append(event)
            self._t.append(now)
            self._not_empty.notify()

    def get_batch(self, n: int, timeout: float) -> list[dict[str, Any]]:
        """Up to ``n`` events, oldest first; [] after ``timeout`` seconds with nothing queued."""
        with self._lock:
            if not self._q and not (self.spill and self.spill.pending) and not self._closed:
                self._not_empty.wait(timeout)
            if self._q:
                take = min(n, len(self._q))
                batch = [self._q.popleft() for _ in range(take)]
                self.batch_times = [self._t.popleft() for _ in range(take)]
                self._not_full.notify_all()
                return batch
            self.batch_times = []
            if self.spill is not None and self.spill.pending:
                self._batch_from_spill = True
                return self.spill.read(n)
            return []

    def commit(self) -> None:
        """The last batch was handled (delivered or given up as failed)."""
        with self._lock:
            if self._batch_from_spill:
                self.spill.commit()  # type: ignore[union-attr]
                self._batch_from_spill = False

    def give_back(self, batch: list[dict[str, Any]]) -> None:
        """The worker is stopping with ``batch`` undelivered: keep it on disk or count it."""
        with self._lock:
            if self._batch_from_spill:
                self.spill.rewind()  # type: ignore[union-attr]
                self._batch_from_spill = False
                return
            self._save_or_drop(batch)

    def close(self) -> None:
        """No more events: wake the worker and any blocked ``put``."""
        with self._lock:
            self._closed = True
            self._not_empty.notify_all()
            self._not_full.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed

    def empty(self) -> bool:
        with self._lock:
            return not self._q and not (self.spill and self.spill.pending)

    def abandon(self) -> None:
        """After the worker stopped: queued events go to the spill file, or count as dropped."""
        with self._lock:
            leftover = list(self._q)
            self._q.clear()
            self._t.clear()
            self._save_or_drop(leftover)

    def _save_or_drop(self, events: list[dict[str, Any]]) -> None:
        for event in events:
            if self.spill is not None and self.spill.append(event):
                self.spilled += 1
            else:
                self.dropped += 1
