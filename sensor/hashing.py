"""SHA-256 of executables, computed once per file version.

Hashing on every exec would cost more than the rest of the sensor; a file is hashed on first
sight and the result cached by (device, inode, size, mtime), so a replaced binary is hashed
again. Files over a size cap are skipped (the field is left out, never guessed).
"""

from __future__ import annotations

import os
from collections import OrderedDict

from threatseer.sensor.digest import sha256

Key = tuple[int, int, int, int]


class ExecutableHashes:
    def __init__(self, max_bytes: int = 64 * 1024 * 1024, cache_size: int = 8192) -> None:
        self.max_bytes = max_bytes
        self.cache_size = cache_size
        self._cache: OrderedDict[Key, str | None] = OrderedDict()
        self.hashed = 0
        self.skipped = 0

    def sha256(self, path: str) -> str | None:
        try:
            st = os.stat(path)
        except OSError:
            return None
        key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
        cached = self._cache.get(key, False)
        if cached is not False:
            self._cache.move_to_end(key)
            return cached  # type: ignore[return-value]
        digest = self._hash(path, st.st_size)
        self._cache[key] = digest
        if len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return digest

    def _hash(self, path: str, size: int) -> str | None:
        if size > self.max_bytes:
            self.skipped += 1
            return None
        h = sha256()
        try:
            with open(path, "rb") as f:
                while chunk := f.read(1 << 20):
                    h.update(chunk)
        except OSError:
            return None
        self.hashed += 1
        return h.hexdigest()
