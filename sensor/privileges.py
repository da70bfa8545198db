"""Giving up privileges once the BPF programs are attached.

Loading and attaching needs CAP_BPF, CAP_PERFMON and (on older kernels, for the locked-memory
limit) CAP_SYS_RESOURCE; reading the ring buffer, reading the counters and updating the path
filters through the maps' open file descriptors need none of them (kernels since 6.5 check
capabilities when maps and programs are made, not on every operation on them). What the
sensor keeps is what it still does with other processes' files for its whole life:

- CAP_SYS_PTRACE: ``/proc/<pid>/exe`` and friends of processes of other users;
- CAP_DAC_READ_SEARCH: reading executables it cannot otherwise read, to hash them;
- CAP_KILL, while ``allow_kill`` is true: a kill command from the hub may target another
  user's process (in-kernel enforcement signals from BPF and needs none). A reload that turns
  ``allow_kill`` off gives it up (:data:`KILL`).

:func:`drop_after_attach` sets no_new_privs (so no exec can give anything back), clears the
ambient and inheritable sets and cuts the permitted and effective sets to those two; it also
drops the rest of the bounding set when it may (CAP_SETPCAP; under the formula's unit the
bounding set is already the capabilities above). The two system calls (``capset``,
``prctl``) are in the native extension (native/syscalls.pxi): not worth a dependency
(python-prctl needs libcap headers to build and is unmaintained), nor ctypes' RSS.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from threatseer.native._bpf import capset, prctl

log = logging.getLogger("threatseer.sensor.privileges")
CAPS = {"CAP_DAC_READ_SEARCH": 2, "CAP_KILL": 5, "CAP_SETPCAP": 8, "CAP_SYS_PTRACE": 19,
        "CAP_SYS_ADMIN": 21, "CAP_SYS_RESOURCE": 24, "CAP_PERFMON": 38, "CAP_BPF": 39}
KEEP = ("CAP_SYS_PTRACE", "CAP_DAC_READ_SEARCH")
KILL = ("CAP_KILL",)
_PR_CAPBSET_DROP = 24
_PR_SET_NO_NEW_PRIVS = 38
_PR_CAP_AMBIENT, _PR_CAP_AMBIENT_CLEAR_ALL = 47, 4


def _last_cap() -> int:
    try:
        return int(Path("/proc/sys/kernel/cap_last_cap").read_text())
    except (OSError, ValueError):
        return 40


def current() -> dict[str, int]:
    """This process's capability sets (``CapEff``, ``CapPrm``, ``CapBnd``, ...) as masks."""
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("Cap"):
            name, _, value = line.partition(":")
            out[name] = int(value.strip(), 16)
    return out


def drop_after_attach(keep: tuple[str, ...] = KEEP) -> bool:
    """Keep only ``keep`` (see the module doc); False (logged) when that was not possible,
    e.g. not running on Linux with the needed rights: the sensor goes on as it is."""
    mask = 0
    for name in keep:
        mask |= 1 << CAPS[name]
    if rc := prctl(_PR_SET_NO_NEW_PRIVS, 1):
        log.warning("cannot set no_new_privs: %s", os.strerror(-rc))
    prctl(_PR_CAP_AMBIENT, _PR_CAP_AMBIENT_CLEAR_ALL)
    if current().get("CapEff", 0) & (1 << CAPS["CAP_SETPCAP"]):
        for cap in range(_last_cap() + 1):
            if not mask & (1 << cap):
                prctl(_PR_CAPBSET_DROP, cap)
    before = current()
    kept = mask & before.get("CapPrm", 0)
    if rc := capset(kept, kept, 0):
        log.warning("cannot drop capabilities (%s): keeping %#x", os.strerror(-rc),
                    before.get("CapEff", 0))
        return False
    dropped = sorted(n for n, bit in CAPS.items()
                     if before.get("CapEff", 0) & (1 << bit) and not mask & (1 << bit))
    log.info("privileges: kept %s; dropped %s%s", ", ".join(keep),
             ", ".join(dropped) or "nothing", " and the rest" if before.get("CapEff", 0)
             & ~sum(1 << b for b in CAPS.values()) else "")
    return True
