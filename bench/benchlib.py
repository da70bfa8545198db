"""What every benchmark needs: where things are, free ports, percentiles, a process's CPU.

The benchmarks are scripts (``python bench/X.py``), so this folder is on sys.path and they
import this module as ``benchlib``.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out"
# The CLI of the interpreter running the bench (the checkout's .venv).
THREATSEER = str(Path(sys.executable).parent / "threatseer")
CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def percentile(values: list[float], q: float) -> float:
    """The q-quantile (0..1) by rank; NaN for no values."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def cpu_seconds(pid: int) -> float:
    """utime + stime of a live process (all its threads), seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def build_loadgen() -> Path:
    """Compile bench/loadgen.c (the open/exec load generator) into bench/out; its path."""
    OUT.mkdir(exist_ok=True)
    exe = OUT / "loadgen"
    subprocess.run(["gcc", "-O2", "-Wall", "-o", exe, ROOT / "bench/loadgen.c"], check=True)
    return exe
