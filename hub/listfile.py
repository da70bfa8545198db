"""Lists of keys or token hashes kept in files: one entry a line (its first word), ``#``
comment lines, a trailing comment naming the holder (Salt writes ``KEY  # minion``); one file
or a directory of them (one per host or person), hidden files ignored.

The hub re-reads a list when it changes, so revoking is deleting a line: :meth:`ListFiles.stamp`
is cheap enough to call on every check (a ``stat`` per file). CURVE allow-lists
(hub/transport.py) and console token lists (hub/console/tokens.py) both read through here.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any


class ListFiles:
    """The files behind one configured path and their entries."""

    def __init__(self, path: str) -> None:
        self.path = path

    def files(self) -> list[str]:
        if not self.path:
            return []
        if os.path.isdir(self.path):
            return sorted(os.path.join(self.path, n) for n in os.listdir(self.path)
                          if not n.startswith("."))
        return [self.path]

    def stamp(self) -> Any:
        """What changes when the list does (paths, mtimes, sizes); None when unreadable."""
        try:
            return tuple((p, os.stat(p).st_mtime_ns, os.stat(p).st_size) for p in self.files())
        except OSError:
            return None

    def entries(self) -> Iterator[tuple[str, int, str, str]]:
        """``(file, line number, first word, holder)`` for each entry line; the holder is the
        trailing comment (which may hold '#': so may a Z85 key), or the file's name. Raises OSError when a file
        cannot be read (the caller keeps its last good list)."""
        for path in self.files():
            with open(path) as f:
                for lineno, line in enumerate(f, 1):
                    words = line.split(None, 1)
                    # (a Z85 key never starts with '#': 2^32 / 85^4 < 84, its index)
                    if not words or words[0].startswith("#"):
                        continue
                    rest = words[1].strip() if len(words) > 1 else ""
                    holder = rest.removeprefix("#").strip()
                    yield path, lineno, words[0], holder or os.path.basename(path)
