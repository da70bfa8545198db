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
        secs = _utc_seconds(head)
        if secs is None:
            return None
        if len(_EPOCH_SECONDS) > 4096:
            _EPOCH_SECONDS.clear()
        _EPOCH_SECONDS[head] = secs
    usec = iso[20:26]
    if not usec.isdigit():
        return None
    return secs * 1_000_000_000 + int(usec) * 1000 - BOOT_WALL_NS


def _utc_seconds(head: str) -> int | None:
    """Seconds since the epoch of "YYYY-MM-DDTHH:MM:SS" (UTC), None when malformed. Civil
    date arithmetic (days from 1970-03-01 in 400-year eras), not time.strptime and
    calendar.timegm: those two modules cost the sensor ~1 MiB of RSS for this one parse."""
    if head[4] != "-" or head[7] != "-" or head[10] != "T" or head[13] != ":" \
            or head[16] != ":":
        return None
    parts = (head[0:4], head[5:7], head[8:10], head[11:13], head[14:16], head[17:19])
    if not all(p.isdigit() and p.isascii() for p in parts):
        return None
    y, m, d, hh, mm, ss = map(int, parts)
    if not (1 <= m <= 12 and 1 <= d <= _month_days(y, m) and hh < 24 and mm < 60
            and ss < 61):
        return None
    y -= m <= 2
    era = y // 400
    yoe = y - era * 400
    doy = (153 * (m + (-3 if m > 2 else 9)) + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    days = era * 146097 + doe - 719468
    return days * 86400 + hh * 3600 + mm * 60 + ss


def _month_days(y: int, m: int) -> int:
    if m == 2:
        return 29 if y % 4 == 0 and (y % 100 != 0 or y % 400 == 0) else 28
    return 30 if m in (4, 6, 9, 11) else 31
