"""Privilege transitions from real set*id/capset calls in forked children: reported only
when they gain uid/gid 0 or capabilities, with before/after ids, field by field."""

from __future__ import annotations

import ctypes
import os
from collections.abc import Callable
from pathlib import Path

libc = ctypes.CDLL(None, use_errno=True)


class CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                ("inheritable", ctypes.c_uint32)]


LINUX_CAPABILITY_VERSION_3 = 0x20080522


def cap_names(mask: int) -> list[str]:
    from threatseer.native._bpf import CAPABILITIES
    return [CAPABILITIES[i] for i in range(64) if mask >> i & 1]


def own_permitted() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("CapPrm:"):
            return int(line.split()[1], 16)
    raise AssertionError("no CapPrm")


def capset_effective(effective: int, permitted: int) -> None:
    hdr = CapHeader(LINUX_CAPABILITY_VERSION_3, 0)
    data = (CapData * 2)()
    for i in range(2):
        data[i].effective = effective >> (32 * i) & 0xFFFFFFFF
        data[i].permitted = permitted >> (32 * i) & 0xFFFFFFFF
    if libc.capset(ctypes.byref(hdr), data) != 0:
        raise OSError(ctypes.get_errno(), "capset")


def in_child(fn: Callable[[], None]) -> int:
    """Run fn in a forked child (exit 0 on success); its pid once it has exited."""
    pid = os.fork()
    if pid == 0:
        try:
            fn()
            os._exit(0)
        except BaseException:
            os._exit(1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, "the child's transitions failed"
    return pid


def by(pid: int, action: str):
    return lambda e: e["event.action"] == action and e["process.pid"] == pid


def test_real_uid_1000_with_euid_0_regaining_uid_0(events, probe):
    before = probe.counters()["priv_filtered"]

    def child():
        os.setresuid(1000, 0, 0)    # ruid 1000, still euid 0: gains nothing
        os.setuid(0)                # privileged setuid: ruid 1000 -> 0

    pid = in_child(child)
    evs = events.wait(by(pid, "setuid"))
    assert len(evs) == 1, evs          # the setresuid gained nothing: not reported
    ev = evs[0]
    assert ev["threatseer.syscall"] == "setuid"
    assert ev["user.id"] == "1000" and ev["user.changes.id"] == "0"
    assert ev["user.effective.id"] == "0" and ev["process.user.id"] == "0"
    assert ev["threatseer.cred.before.uid"] == "1000" and ev["threatseer.cred.before.euid"] == "0"
    assert ev["process.real_user.id"] == "0" and ev["process.saved_user.id"] == "0"
    assert ev["threatseer.capabilities.added"] == []
    assert ev["event.category"] == ["iam", "process"] and ev["event.type"] == ["change"]
    assert ev["event.outcome"] == "success"
    assert probe.counters()["priv_filtered"] > before


def test_saved_uid_0_restoring_euid_0_gains_capabilities(events):
    permitted = own_permitted()

    def child():
        os.setresuid(65534, 65534, 0)   # effective caps dropped, saved uid 0 kept
        os.setresuid(-1, 0, -1)         # euid back to 0: caps return

    pid = in_child(child)
    (ev,) = events.wait(by(pid, "setuid"))
    assert ev["threatseer.syscall"] == "setresuid"
    assert ev["user.id"] == "65534" and ev["user.changes.id"] == "65534"
    assert ev["threatseer.cred.before.euid"] == "65534" and ev["user.effective.id"] == "65534"
    assert ev["process.user.id"] == "0" and ev["process.saved_user.id"] == "0"
    assert ev["threatseer.capabilities.added"] == cap_names(permitted)
    assert ev["process.thread.capabilities.effective"] == cap_names(permitted)


def test_capset_raising_effective_capabilities(events):
    permitted = own_permitted()
    net_raw = 1 << 13

    def child():
        capset_effective(0, permitted)          # drop: not reported
        capset_effective(net_raw, permitted)    # raise one

    pid = in_child(child)
    (ev,) = events.wait(by(pid, "capset"))
    assert ev["threatseer.capabilities.added"] == ["CAP_NET_RAW"]
    assert ev["process.thread.capabilities.effective"] == ["CAP_NET_RAW"]
    assert ev["process.thread.capabilities.permitted"] == cap_names(permitted)
    assert ev["threatseer.syscall"] == "capset"
    assert ev["user.id"] == "0" and ev["user.changes.id"] == "0"


def test_gid_transition_and_dropping_privileges_unreported(events):
    def child():
        os.setresgid(1000, 0, 0)
        os.setgid(0)                 # rgid 1000 -> 0
        os.setgid(65534)             # drops: not reported
        os.setuid(65534)

    pid = in_child(child)
    (ev,) = events.wait(by(pid, "setgid"))
    assert ev["threatseer.syscall"] == "setgid"
    assert ev["group.id"] == "1000" and ev["user.changes.group.id"] == "0"
    assert ev["threatseer.cred.before.gid"] == "1000" and ev["process.group.id"] == "0"
    assert ev["process.real_group.id"] == "0" and ev["process.saved_group.id"] == "0"
    events.wait(by(pid, "exit"))
    assert [e for e in events.events if e["process.pid"] == pid
            and e["event.action"] in ("setuid", "setgid", "capset")] == [ev]
