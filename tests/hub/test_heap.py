"""hub/heap.py: with the mmap threshold fixed, a big buffer freed does not send the next big
buffers into glibc's arenas (where they stay, freed but kept: bench/soak_bench.py --diag)."""

from __future__ import annotations

import ctypes
import ctypes.util

import pytest

from threatseer.hub import heap


class _Mallinfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]


def _mapped_blocks() -> int:
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    libc.mallinfo2.restype = _Mallinfo2
    return libc.mallinfo2().hblks


def test_big_buffers_are_mapped_alone_after_a_bigger_one_was_freed() -> None:
    if not heap.fix_mmap_threshold():
        pytest.skip("not glibc")
    big = bytearray(16 << 20)  # freed: glibc's own rule would now keep < 16 MiB in arenas
    del big
    before = _mapped_blocks()
    buf = bytearray(1 << 20)
    assert _mapped_blocks() == before + 1, "a 1 MiB buffer came from an arena"
    del buf
    assert _mapped_blocks() == before
    heap.trim()
