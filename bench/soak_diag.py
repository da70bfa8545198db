"""Where a soaked hub's memory goes: loaded into the hub by ``soak_bench.py --diag`` as its
``sitecustomize`` (bench only, never installed).

Every ``TS_SOAK_DIAG_S`` seconds it appends one JSON line to ``TS_SOAK_DIAG``: the process's
RSS split by mapping kind (``/proc/self/smaps``: the brk heap, anonymous mappings, among them
the 1 MiB ones of Python's object allocator, files), Python's allocated blocks and its
object allocator's arenas (``sys._debugmallocstats``),
glibc's own totals (``mallinfo2``: bytes in use, free bytes kept in its arenas, mmapped
blocks), SQLite's (``sqlite3_memory_used``), and, with ``PYTHONTRACEMALLOC`` set, the Python
heap traced and the 15 source lines whose allocations grew most since the first sample after
``TS_SOAK_DIAG_WARMUP_S`` (tracing costs memory of its own: use it for the lines, not the RSS). So growth outside the Python heap can be told apart: glibc arenas
(free bytes kept), SQLite's caches, or mappings of their own (ZeroMQ, BPF, threads' stacks).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import os
import sys
import threading
import time
import tracemalloc


class _Mallinfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]


def _smaps() -> dict[str, float]:
    kinds = {"heap": 0, "anon": 0, "anon_1mib": 0, "file": 0, "stack": 0, "other": 0}
    anon_maps = 0
    kind = "other"
    with open("/proc/self/smaps") as f:
        for line in f:
            first = line.split(None, 1)[0]
            if "-" in first and not first.endswith(":"):
                parts = line.split()
                path = parts[5] if len(parts) > 5 else ""
                lo, hi = (int(x, 16) for x in first.split("-"))
                if path == "[heap]":
                    kind = "heap"
                elif not path and hi - lo == 1 << 20:
                    kind = "anon_1mib"  # Python's object allocator maps 1 MiB arenas
                    anon_maps += 1
                elif not path:
                    kind = "anon"
                    anon_maps += 1
                elif path.startswith("/"):
                    kind = "file"
                elif path.startswith("[stack"):
                    kind = "stack"
                else:
                    kind = "other"
            elif first == "Rss:":
                kinds[kind] += int(line.split()[1])
    out = {k: v / 1024 for k, v in kinds.items()}
    out["anon_maps"] = anon_maps
    return out


def _pymalloc() -> dict[str, float]:
    """Python's object allocator: arenas held now and at most (``sys._debugmallocstats``
    writes to the C stderr: it is sent to a file meanwhile)."""
    import tempfile

    out: dict[str, float] = {}
    with tempfile.TemporaryFile() as tmp:
        saved = os.dup(2)
        try:
            os.dup2(tmp.fileno(), 2)
            sys._debugmallocstats()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        tmp.seek(0)
        for line in tmp.read().decode(errors="replace").splitlines():
            name, _, value = line.partition("=")
            value = value.strip().replace(",", "")
            if name.startswith("# arenas allocated current"):
                out["arenas"] = float(value)
            elif name.startswith("# arenas highwater mark"):
                out["arenas_max"] = float(value)
            elif name.startswith("Total") and "mib" not in out:  # the arenas' (first)
                out["mib"] = float(value) / 2**20
            elif name.startswith("# bytes in allocated blocks"):
                out["in_blocks_mib"] = float(value) / 2**20
    return out


def _run(path: str, every: float, warmup: float) -> None:
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    libc.mallinfo2.restype = _Mallinfo2
    try:
        sqlite = ctypes.CDLL("libsqlite3.so.0")
        sqlite.sqlite3_memory_used.restype = ctypes.c_int64
        sqlite.sqlite3_memory_highwater.restype = ctypes.c_int64
    except OSError:
        sqlite = None
    t0 = time.monotonic()
    base = None
    while True:
        time.sleep(every)
        t = time.monotonic() - t0
        mi = libc.mallinfo2()
        rec: dict = {"t": round(t, 1), "smaps_mib": _smaps(),
                     "malloc_mib": {"in_use": mi.uordblks / 2**20, "free": mi.fordblks / 2**20,
                                    "mmapped": mi.hblkhd / 2**20, "arena": mi.arena / 2**20},
                     "threads": threading.active_count(),
                     "py_blocks": sys.getallocatedblocks(), "pymalloc": _pymalloc()}
        if sqlite is not None:
            rec["sqlite_mib"] = sqlite.sqlite3_memory_used() / 2**20
        if tracemalloc.is_tracing():
            rec["traced_mib"] = tracemalloc.get_traced_memory()[0] / 2**20
            if t >= warmup:
                # Sizes per source line only: a snapshot kept would itself grow the heap.
                snap = tracemalloc.take_snapshot()
                sizes = {f"{st.traceback[0].filename}:{st.traceback[0].lineno}": st.size
                         for st in snap.statistics("lineno")}
                del snap
                if base is None:
                    base = sizes
                else:
                    grew = sorted(((v - base.get(k, 0), k) for k, v in sizes.items()),
                                  reverse=True)[:15]
                    rec["grew"] = [f"{d / 1024:+.0f} KiB {k}" for d, k in grew]
        with open(path, "a") as f:
            f.write(json.dumps(rec) + "\n")


_PATH = os.environ.get("TS_SOAK_DIAG")
if _PATH:
    threading.Thread(target=_run, args=(_PATH, float(os.environ.get("TS_SOAK_DIAG_S", "30")),
                                        float(os.environ.get("TS_SOAK_DIAG_WARMUP_S", "180"))),
                     name="soak-diag", daemon=True).start()
