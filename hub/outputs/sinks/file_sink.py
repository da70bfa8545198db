"""JSON lines (nested ECS) in a file, rotated by size: path, path.1 ... path.<keep>."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, BinaryIO

from threatseer.common.ecs import to_json

from ..config import FileOptions, OutputConfig
from .base import SendResult, Sink


class FileSink(Sink):
    def __init__(self, cfg: OutputConfig, opts: FileOptions) -> None:
        self.path = Path(opts.path)
        self.max_bytes = opts.max_bytes
        self.keep = opts.keep
        self._f: BinaryIO | None = None
        self._size = 0

    def connect(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._f = open(self.path, "ab")  # noqa: SIM115 - kept open between batches
        self._size = self._f.tell()

    def send(self, events: list[dict[str, Any]]) -> SendResult:
        assert self._f is not None
        for event in events:
            line = (to_json(event) + "\n").encode()
            if self._size and self._size + len(line) > self.max_bytes:
                self._rotate()
            self._f.write(line)
            self._size += len(line)
        self._f.flush()
        return SendResult(sent=len(events))

    def _rotate(self) -> None:
        """Shift path.N-1 -> path.N, path -> path.1, and delete what is beyond ``keep``."""
        assert self._f is not None
        self._f.close()
        if self.keep == 0:
            self.path.unlink(missing_ok=True)
        else:
            Path(f"{self.path}.{self.keep}").unlink(missing_ok=True)
            for i in range(self.keep - 1, 0, -1):
                older = Path(f"{self.path}.{i}")
                if older.exists():
                    os.replace(older, f"{self.path}.{i + 1}")
            os.replace(self.path, f"{self.path}.1")
        self._f = open(self.path, "ab")  # noqa: SIM115
        self._size = 0

    def disconnect(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None
