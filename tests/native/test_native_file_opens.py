"""Sensitive opens: in-kernel prefix filter (exact, prefix, '*' component), live updates,
relative paths, write intent, failures, and filenames not yet mapped at syscall entry."""

from __future__ import annotations

import ctypes
import mmap
import os
import threading

import pytest

libc = ctypes.CDLL(None, use_errno=True)


def is_open(path):
    return lambda e: e["event.action"] == "open" and e["file.path"] == path \
        and e["process.pid"] == os.getpid()


def test_reading_etc_shadow(events):
    with open("/etc/shadow", "rb") as f:
        fd = f.fileno()
    (ev,) = events.wait(is_open("/etc/shadow"))
    assert ev["threatseer.open.flags"] == ["read"]
    assert ev["threatseer.open.result"] == fd
    assert ev["event.outcome"] == "success"
    assert ev["process.thread.id"] == threading.get_native_id()
    assert ev["event.category"] == ["file"] and ev["event.type"] == ["access"]


def test_relative_open_is_resolved_by_the_kernel(events):
    cwd = os.getcwd()
    os.chdir("/etc")
    try:
        os.close(os.open("shadow", os.O_RDONLY))
    finally:
        os.chdir(cwd)
    (ev,) = events.wait(is_open("/etc/shadow"))
    assert ev["event.outcome"] == "success"


def test_write_create_truncate_under_a_live_prefix(events, probe, tmp_path):
    target = tmp_path / "secret.conf"
    probe.set_sensitive_paths(["/etc/shadow", f"{tmp_path}/"])
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.close(fd)
    (ev,) = events.wait(is_open(str(target)))
    assert ev["threatseer.open.flags"] == ["write", "create", "truncate"]
    assert ev["threatseer.open.result"] == fd

    os.close(os.open(target, os.O_RDWR))
    (ev,) = events.wait(lambda e: is_open(str(target))(e)
                        and e["threatseer.open.flags"] == ["read", "write"])
    assert ev["event.outcome"] == "success"


def test_failed_open_reports_user_string_and_errno(events, probe, tmp_path):
    probe.set_sensitive_paths([f"{tmp_path}/"])
    missing = tmp_path / "nope" / "missing"
    with pytest.raises(FileNotFoundError):
        os.open(missing, os.O_RDONLY)
    (ev,) = events.wait(is_open(str(missing)))
    assert ev["event.outcome"] == "failure"
    assert ev["threatseer.open.result"] == -2


def test_non_matching_path_is_filtered_and_counted(events, probe):
    before = probe.counters()["filtered"]
    os.close(os.open("/etc/hostname", os.O_RDONLY))
    os.close(os.open("/etc/shadow", os.O_RDONLY))   # a marker: the stream reached this point
    events.wait(is_open("/etc/shadow"))
    assert [e for e in events.events if e.get("file.path") == "/etc/hostname"] == []
    assert probe.counters()["filtered"] > before


def test_live_update_removes_and_restores_a_prefix(events, probe, tmp_path):
    marker = tmp_path / "marker"
    marker.write_text("x")
    probe.set_sensitive_paths([str(marker)])
    os.close(os.open("/etc/shadow", os.O_RDONLY))
    os.close(os.open(marker, os.O_RDONLY))
    events.wait(is_open(str(marker)))
    assert [e for e in events.events if e.get("file.path") == "/etc/shadow"] == []

    probe.set_sensitive_paths(["/etc/shadow"])
    os.close(os.open("/etc/shadow", os.O_RDONLY))
    assert events.wait(is_open("/etc/shadow"))


def test_star_matches_exactly_one_component(events, probe, tmp_path):
    for sub in ("alice/.ssh", "bob/.ssh", "deep/er/.ssh", "carol/other"):
        (tmp_path / sub).mkdir(parents=True)
        (tmp_path / sub / "id_rsa").write_text("k")
    probe.set_sensitive_paths([f"{tmp_path}/*/.ssh/"])
    for sub in ("deep/er/.ssh", "carol/other", "alice/.ssh", "bob/.ssh"):
        os.close(os.open(tmp_path / sub / "id_rsa", os.O_RDONLY))
    events.wait(is_open(str(tmp_path / "bob/.ssh/id_rsa")))
    events.wait(is_open(str(tmp_path / "alice/.ssh/id_rsa")))
    paths = {e["file.path"] for e in events.events if e["event.action"] == "open"}
    assert str(tmp_path / "alice/.ssh/id_rsa") in paths
    assert str(tmp_path / "deep/er/.ssh/id_rsa") not in paths
    assert str(tmp_path / "carol/other/id_rsa") not in paths


def test_bad_prefixes_are_rejected_and_filter_kept(events, probe):
    for bad in ("relative/path", "/a/b*c/", "/*/x/*/", ""):
        with pytest.raises(ValueError):
            probe.set_sensitive_paths(["/etc/shadow", bad])
    os.close(os.open("/etc/shadow", os.O_RDONLY))
    assert events.wait(is_open("/etc/shadow"))


def _unmapped_cstring(tmp_path, text: str) -> int:
    """Address of text as a C string in a fresh file mapping this process never touched,
    so its page is not present when the open syscall starts (mmap does not populate)."""
    backing = tmp_path / "name.bin"
    backing.write_bytes(text.encode().ljust(mmap.PAGESIZE, b"\0"))
    fd = os.open(backing, os.O_RDONLY)
    try:
        libc.mmap.restype = ctypes.c_void_p
        libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                              ctypes.c_int, ctypes.c_long]
        addr = libc.mmap(None, mmap.PAGESIZE, mmap.PROT_READ, mmap.MAP_PRIVATE, fd, 0)
    finally:
        os.close(fd)
    assert addr not in (None, ctypes.c_void_p(-1).value)
    return addr


def test_filename_in_an_unmapped_page_is_not_lost(events, probe, tmp_path):
    probe.set_sensitive_paths(["/etc/shadow"])
    for name, ok in (("/etc/shadow", True), ("/etc/shadow-threatseer-missing", False)):
        addr = _unmapped_cstring(tmp_path, name)
        try:
            fd = libc.openat(-100, ctypes.c_void_p(addr), os.O_RDONLY)  # AT_FDCWD
            if fd >= 0:
                os.close(fd)
        finally:
            libc.munmap(ctypes.c_void_p(addr), ctypes.c_size_t(mmap.PAGESIZE))
        (ev,) = events.wait(is_open(name))
        assert ev["event.outcome"] == ("success" if ok else "failure")


class OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64),
                ("resolve", ctypes.c_uint64)]


def test_openat2_and_legacy_open(events, probe, tmp_path):
    target = tmp_path / "via-openat2"
    target.write_text("x")
    probe.set_sensitive_paths([f"{tmp_path}/"])
    how = OpenHow(flags=os.O_RDWR, mode=0, resolve=0)
    fd = libc.syscall(437, -100, str(target).encode(), ctypes.byref(how),   # SYS_openat2
                      ctypes.sizeof(how))
    assert fd >= 0, ctypes.get_errno()
    os.close(fd)
    (ev,) = events.wait(is_open(str(target)))
    assert ev["threatseer.open.flags"] == ["read", "write"]
    assert ev["threatseer.open.result"] == fd

    legacy = tmp_path / "via-open"
    legacy.write_text("x")
    fd = libc.syscall(2, str(legacy).encode(), os.O_RDONLY)   # SYS_open (x86_64)
    assert fd >= 0
    os.close(fd)
    (ev,) = events.wait(lambda e: is_open(str(legacy))(e)   # not write_text's own open
                        and e["threatseer.open.flags"] == ["read"])
    assert ev["event.outcome"] == "success" and ev["threatseer.open.result"] == fd
