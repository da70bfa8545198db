"""The one wall-clock time of boot that ``process.start`` is reckoned from.

The kernel gives a task's start on the boot clock (``start_boottime``, ns); ECS wants a date.
The decoder adds :data:`BOOT_WALL_NS` to it, and the sensor's process table subtracts it
again to get back the clock ticks ``/proc/<pid>/stat`` counts (the process's stable id is made
from them). Both must use the same value or a process would change identity: it is fixed once
per sensor process, here, and rounded to the microsecond ``process.start`` is written with, so
the round trip is exact. Plain Python (no libbpf), so the process table can import it.

Fixed means that ``process.start`` does not follow later steps of the wall clock (NTP),
like ``ps``, which reckons from the boot time in /proc/stat; ``@timestamp`` does follow them.
"""

from __future__ import annotations

import calendar
import time

BOOT_WALL_NS = (time.clock_gettime_ns(time.CLOCK_REALTIME)
                - time.clock_gettime_ns(time.CLOCK_BOOTTIME)) // 1000 * 1000

_EPOCH_SECONDS: dict[str, int] = {}


def boot_ns(iso: str) -> int | None:
    """Boot-clock ns of a ``process.start`` the decoder wrote ("2026-11-28T02:22:40.123456Z"),
    to the microsecond; None for anything else."""
    if type(iso) is not str or len(iso) != 27 or iso[19] != "." or iso[26] != "Z":
        return None
    head = iso[:19]
    secs = _EPOCH_SECONDS.get(head)
    if secs is None:
        try:
            secs = calendar.timegm(time.strptime(head, "%Y-%m-%dT%H:%M:%S"))
        except ValueError:
            return None
        if len(_EPOCH_SECONDS) > 4096:
            _EPOCH_SECONDS.clear()
        _EPOCH_SECONDS[head] = secs
    usec = iso[20:26]
    if not usec.isdigit():
        return None
    return secs * 1_000_000_000 + int(usec) * 1000 - BOOT_WALL_NS
