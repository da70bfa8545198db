"""Enrichment's CPU per fork/exec/exit event, parent descriptions kept against rebuilt.

Captures the real kernel's records of an exec flood (``bench/out/loadgen exec``: fork, execve
/bin/true, exit, in a loop) with the native probe, then replays the decoded events through
the sensor's Enricher in batches of 23 (the live sensor's batch at that rate) several times:
once with the process table keeping parent descriptions for its epoch (the sensor's way) and
once rebuilding them for every event (``ProcessTable(reuse=False)``). The replay measures
enrichment alone, in thread CPU, without the reader, the wire or the spool and without the
noise of a shared host's scheduling; bench/sensor_bench.py measures the whole sensor.
Both ways must give the same events, byte for byte.

    sudo .venv/bin/python bench/enrich_bench.py [--seconds 1] [--repeat 7]
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import subprocess
import tempfile
import time
from typing import Any

import msgspec
from benchlib import build_loadgen

from threatseer.common import ecs
from threatseer.native import Probe
from threatseer.sensor.enrich import Enricher
from threatseer.sensor.proctable import ProcessTable

BATCH = 23


class _Reader:
    """What Enricher.attach() needs of the reader, which stamps event ids in the sensor: the
    replay leaves them out, as the live sensor's enrichment does not give them."""

    def set_identity(self, prefix: str, first: int) -> None:
        pass

    def next_sequence(self) -> int:
        return 0


def capture(seconds: float) -> tuple[ProcessTable, list[dict[str, Any]]]:
    """A table seeded from /proc before the flood, and the flood's events in kernel order."""
    loadgen = build_loadgen()
    probe = Probe(ring_buffer_kib=4096, sensitive_paths=["/etc/shadow"], self_tgid=0)
    try:
        table = ProcessTable("bench-host")
        table.seed()
        while probe.poll(timeout_ms=0):
            pass
        load = subprocess.Popen([str(loadgen), "exec", str(seconds), "0"],
                                stdout=subprocess.DEVNULL)
        raw: list[dict[str, Any]] = []
        while load.poll() is None:
            raw.extend(probe.poll(timeout_ms=50))
        deadline = time.monotonic() + 0.5
        while time.monotonic() < deadline:
            raw.extend(probe.poll(timeout_ms=50))
    finally:
        probe.close()
    tree, out = {load.pid}, []
    for ev in raw:
        pid = ev.get("process.pid")
        if ev.get("event.action") == ecs.FORK and ev.get("process.parent.pid") in tree:
            tree.add(pid)
        if pid in tree:
            out.append(ev)
    return table, out


def replay(table: ProcessTable, events: list[dict[str, Any]], reuse: bool,
           repeat: int) -> tuple[list[float], list[dict[str, Any]]]:
    """Thread-CPU microseconds per event of each run, and the last run's events."""
    times, out = [], []
    for _ in range(repeat):
        fresh = copy.deepcopy(table)
        fresh.reuse = reuse
        enricher = Enricher("bench", "h", "bench-host", proctable=fresh, host={})
        enricher.attach(_Reader(), encode=False)
        evs = copy.deepcopy(events)
        batches = [evs[i:i + BATCH] for i in range(0, len(evs), BATCH)]
        t0 = time.thread_time_ns()
        out = [ev for batch in batches for ev in enricher.enrich(batch)]
        times.append((time.thread_time_ns() - t0) / 1000 / max(len(evs), 1))
    return times, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=1.0, help="exec flood to capture")
    parser.add_argument("--repeat", type=int, default=7, help="replays of each way")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root: the capture loads the sensor's BPF programs")
    table, events = capture(args.seconds)
    with tempfile.TemporaryDirectory() as empty:
        table.proc_root = empty  # the replays know only what the events say
        kept_t, kept = replay(table, events, True, args.repeat)
        built_t, built = replay(table, events, False, args.repeat)
    encode = msgspec.msgpack.Encoder().encode
    identical = len(kept) == len(built) and all(
        encode(a) == encode(b) for a, b in zip(kept, built, strict=True))
    actions = {a: sum(1 for e in events if e.get("event.action") == a)
               for a in (ecs.FORK, ecs.EXEC, ecs.EXIT)}
    print(f"captured {len(events)} events of the flood {actions}; {args.repeat} replays each, "
          f"batches of {BATCH}")
    for name, t in (("kept   ", kept_t), ("rebuilt", built_t)):
        print(f"{name} {statistics.median(t):6.2f} us/event (min {min(t):.2f}, "
              f"max {max(t):.2f})")
    print(f"same events both ways: {identical}")
    print(f"enrich_us_per_event={statistics.median(kept_t):.2f} "
          f"rebuilt_us_per_event={statistics.median(built_t):.2f} identical={int(identical)}")


if __name__ == "__main__":
    main()
