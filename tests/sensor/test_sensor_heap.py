"""The sensor fixes glibc's mmap threshold (native ``fix_mmap_threshold``): a flood's big batch
bodies, once freed, must not send the next ones into the heap, where they stayed (the
sensor's peak RSS, bench/sensor_bench.py: 42.1 MiB with glibc's moving threshold).

Each case runs in a fresh interpreter: in this one, earlier tests leave free chunks in the
heap that glibc reuses whatever the threshold."""

from __future__ import annotations

import subprocess
import sys

from threatseer.sensor import daemon

SCRIPT = """
import ctypes, sys
from threatseer.native._bpf import fix_mmap_threshold

class Mallinfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks",
                "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = Mallinfo2
if sys.argv[1] == "fixed":
    assert fix_mmap_threshold(int(sys.argv[2])) == 1
body = bytearray(1 << 20)  # a flood's batch body, freed: glibc raises its threshold to 1 MiB
del body
before = libc.mallinfo2().hblks
buf = bytearray(200 << 10)  # the next (smaller) body
print("mapped" if libc.mallinfo2().hblks == before + 1 else "heap")
"""


def _where(*args: str) -> str:
    return subprocess.run([sys.executable, "-c", SCRIPT, *args], capture_output=True,
                          text=True, check=True, timeout=60).stdout.strip()


def test_batch_bodies_are_mapped_alone_after_a_bigger_one_was_freed() -> None:
    assert _where("glibc-default", "0") == "heap"  # what made the flood's peak
    assert _where("fixed", str(daemon.MMAP_THRESHOLD)) == "mapped"
