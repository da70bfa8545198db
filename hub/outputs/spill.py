"""A bounded on-disk FIFO of events for an output that cannot keep up (overflow: spill).

One JSON line per flat event, appended at the end and read from a saved offset. The offset
advances (and is saved next to the file) only when the worker commits, i.e. after the events
read were delivered, so a hub that dies mid-replay sends them again on the next start
(at-least-once; the event ids make the copies recognisable). When everything is read the
file is truncated. Lines are flushed to the OS per event but not fsynced: they survive a hub
crash, not a power cut.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


class SpillFile:
    def __init__(self, path: str | Path, max_bytes: int) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._offset_path = self.path.with_name(self.path.name + ".offset")
        self.max_bytes = max_bytes
        self._writer = open(self.path, "ab")  # noqa: SIM115 - lives as long as the output
        self._reader = open(self.path, "rb")  # noqa: SIM115
        self.size = self._writer.tell()
        self._committed = self._load_offset()
        self._cursor = self._committed
        self._read_pending = 0
        self.corrupt = 0
        self.pending = self._count_lines(self._committed)

    def _load_offset(self) -> int:
        try:
            off = int(self._offset_path.read_text().strip() or 0)
        except (OSError, ValueError):
            return 0
        return off if 0 <= off <= self.size else 0

    def _count_lines(self, start: int) -> int:
        self._reader.seek(start)
        return sum(1 for _ in self._reader)

    def append(self, event: dict[str, Any]) -> bool:
        """Add one event; False (and nothing written) when the file is at its bound."""
        line = (json.dumps(event, default=str, separators=(",", ":")) + "\n").encode()
        if self.size + len(line) > self.max_bytes:
            return False
        self._writer.write(line)
        self._writer.flush()
        self.size += len(line)
        self.pending += 1
        return True

    def read(self, n: int) -> list[dict[str, Any]]:
        """Up to ``n`` events after the last read (not yet committed)."""
        self._reader.seek(self._cursor)
        events: list[dict[str, Any]] = []
        while len(events) < n:
            line = self._reader.readline()
            if not line or not line.endswith(b"\n"):
                break
            self._cursor += len(line)
            self._read_pending += 1
            try:
                events.append(json.loads(line))
            except ValueError:
                self.corrupt += 1
        return events

    def commit(self) -> None:
        """The events read so far were delivered: forget them (and the file when it is empty)."""
        self.pending -= self._read_pending
        self._read_pending = 0
        self._committed = self._cursor
        if self._committed >= self.size:
            self._writer.truncate(0)
            self._writer.seek(0)
            self.size = self._committed = self._cursor = 0
            self.pending = 0
        self._save_offset()

    def rewind(self) -> None:
        """The events read were not delivered: read them again next time."""
        self._cursor = self._committed
        self._read_pending = 0

    def _save_offset(self) -> None:
        tmp = self._offset_path.with_name(self._offset_path.name + ".tmp")
        tmp.write_text(str(self._committed))
        os.replace(tmp, self._offset_path)

    def close(self) -> None:
        self.rewind()
        self._save_offset()
        self._writer.close()
        self._reader.close()
