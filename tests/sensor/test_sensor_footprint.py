"""What the sensor does not load: modules and libraries it would import for one small job
each (ctypes for two system calls, time.strptime and calendar for one date parse), which
cost its RSS (the goal: <= 40 MiB, bench/sensor_bench.py). The real sensor's mapped
libraries are checked in test_sensor_daemon.py."""

from __future__ import annotations

import calendar
import random
import subprocess
import sys
import time

from threatseer.native import clock

AVOIDED = ("ctypes", "calendar", "_strptime", "hashlib", "_hashlib", "threatseer.hub")


def test_the_sensor_modules_import_none_of_the_avoided_ones() -> None:
    code = f"""
import sys
from threatseer.cli import main
from threatseer.sensor import containers, daemon, privileges, proctable
from threatseer.native import clock, probe
assert clock.boot_ns("2026-11-28T02:22:40.123456Z") is not None
containers.ContainerCgroups().get(2**63)
loaded = [m for m in {AVOIDED!r} if m in sys.modules or any(
    name.startswith(m + ".") for name in sys.modules)]
assert not loaded, loaded
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr[-2000:]


def test_process_start_times_parse_as_calendar_does() -> None:
    rnd = random.Random(20)
    for t in [0, 951782400, 1709164799, 4102444800, *(rnd.randrange(0, 2**33)
                                                     for _ in range(20000))]:
        head = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t))
        assert clock._utc_seconds(head) == t == calendar.timegm(time.gmtime(t)), head
        iso = f"{head}.000042Z"
        assert clock.boot_ns(iso) == t * 10**9 + 42_000 - clock.BOOT_WALL_NS
    for bad in ("2026-02-30T00:00:00.000000Z", "2025-13-01T00:00:00.000000Z",
                "2026-01-01T24:00:00.000000Z", "2026-01-01 00:00:00.000000Z",
                "20x6-01-01T00:00:00.000000Z", "2026-01-01T00:00:00.00000xZ"):
        assert clock.boot_ns(bad) is None, bad
