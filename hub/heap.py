"""glibc's allocator, held to what a long-running hub needs.

Why: under glibc, a buffer above the mmap threshold (128 KiB at first) is mapped on its own
and given back when freed, but each such free raises the threshold to that buffer's size (up
to 32 MiB). A hub decompresses batch bodies and encodes output of a few hundred KiB to a few
MiB, so after the first burst those buffers come from the arenas instead, and every later,
bigger burst leaves the arenas bigger: freed, but kept (bench/soak_bench.py --diag: glibc's
free bytes kept rose 24 -> 33 MiB in 5 minutes of a 10-minute soak, its bytes in use flat at
14.5). A fixed threshold keeps big buffers out of the arenas (5 MiB kept, flat, in the same
conditions), and :func:`trim` gives the arenas' free pages back every few seconds.

Not glibc (musl...): both are no-ops.

The sensor makes the same two calls through its native module (``threatseer.native._bpf``:
``fix_mmap_threshold``, ``trim_heap``) to stay free of ctypes; the hub does not import that
module, which links libbpf: a hub host needs no BPF library.
"""

from __future__ import annotations

import ctypes
from typing import Any

M_MMAP_THRESHOLD = -3  # mallopt parameter (malloc.h)
MMAP_THRESHOLD = 256 * 1024  # buffers from here on are mapped alone and given back on free

_libc: Any = None


def _glibc() -> Any:
    global _libc
    if _libc is None:
        try:
            # The process's own symbols (dlopen(NULL)), libc's among them: no library search,
            # which with ctypes.util.find_library would run ldconfig in a child process.
            lib = ctypes.CDLL(None)
            _libc = lib if hasattr(lib, "mallopt") and hasattr(lib, "malloc_trim") else False
        except OSError:
            _libc = False
    return _libc


def fix_mmap_threshold(nbytes: int = MMAP_THRESHOLD) -> bool:
    """Fix glibc's mmap threshold at ``nbytes`` (no longer raised by each big free);
    whether it was set. Call it once at start."""
    libc = _glibc()
    return bool(libc and libc.mallopt(M_MMAP_THRESHOLD, nbytes))


def trim() -> None:
    """Give the allocator's free pages back to the kernel (glibc ``malloc_trim``)."""
    libc = _glibc()
    if libc:
        libc.malloc_trim(0)
