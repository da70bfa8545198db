"""hub/heap.py: with the mmap threshold fixed, a big buffer freed does not send the next big
buffers into glibc's arenas (where they stay, freed but kept: bench/soak_bench.py --diag).

Each case runs in a fresh interpreter: in this one, earlier tests leave free chunks in the
arenas that glibc reuses whatever the threshold."""

from __future__ import annotations

import subprocess
import sys

import pytest

from threatseer.hub import heap

SCRIPT = """
import ctypes, sys
from threatseer.hub import heap

class Mallinfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks",
                "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

libc = ctypes.CDLL(None)
libc.mallinfo2.restype = Mallinfo2
if sys.argv[1] == "fixed":
    heap.fix_mmap_threshold()
big = bytearray(16 << 20)  # freed: glibc's own rule now keeps buffers < 16 MiB in arenas
del big
before = libc.mallinfo2().hblks
buf = bytearray(1 << 20)
print("mapped" if libc.mallinfo2().hblks == before + 1 else "arena")
"""


def _where(mode: str) -> str:
    return subprocess.run([sys.executable, "-c", SCRIPT, mode], capture_output=True,
                          text=True, check=True, timeout=60).stdout.strip()


def test_big_buffers_are_mapped_alone_after_a_bigger_one_was_freed() -> None:
    if not heap.fix_mmap_threshold():
        pytest.skip("not glibc")
    assert _where("glibc-default") == "arena"  # what the hub did before (and the soak saw)
    assert _where("fixed") == "mapped"
    heap.trim()
