"""The failed-batches file: every batch whose scoring or output failed, kept as it came.

Why: a batch that fails (a bug, an input the checks did not foresee) is acknowledged so that it
does not block its sensor's later batches nor come back forever, and it must not be lost
silently either. Each one is appended to ``<state_dir>/failed-batches.msgpack`` as one msgpack
map ``{"at", "sid", "epoch", "seq", "error", "header", "body"}`` (header and body: the frames
as received), which ``threatseer replay`` tooling or a developer can read back with any msgpack
reader. The file is rotated at ``max_bytes`` (one older file, ``.1``, is kept), so a sensor
that makes every batch fail costs bounded disk.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

import msgpack

log = logging.getLogger("threatseer.hub.deadletter")
FILE = "failed-batches.msgpack"


class FailedBatches:
    def __init__(self, state_dir: str, max_bytes: int) -> None:
        self.path = os.path.join(state_dir, FILE)
        self.max_bytes = max_bytes
        self.written = 0
        self.errors = 0

    def add(self, sid: str, epoch: int, seq: int, error: str, frames: list[Any]) -> None:
        record = {"at": time.time(), "sid": sid, "epoch": epoch, "seq": seq, "error": error,
                  "header": bytes(frames[0]) if frames else b"",
                  "body": bytes(frames[1]) if len(frames) > 1 else b""}
        try:
            data = msgpack.packb(record, use_bin_type=True)
            size = os.path.getsize(self.path) if os.path.exists(self.path) else 0
            if size and size + len(data) > self.max_bytes:
                os.replace(self.path, self.path + ".1")
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            with os.fdopen(fd, "ab") as f:
                f.write(data)
            self.written += 1
        except OSError as exc:
            self.errors += 1
            log.error("cannot keep failed batch %d of %s in %s: %s", seq, sid, self.path, exc)


def read(path: str) -> list[dict[str, Any]]:
    """Every record of a failed-batches file (for tools and tests)."""
    with open(path, "rb") as f:
        return list(msgpack.Unpacker(f, raw=False, strict_map_key=False))
