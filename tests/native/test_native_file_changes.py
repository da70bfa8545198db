"""File changes from real syscalls, field by field: the watched-prefix filter (set live),
setuid/setgid chmod anywhere, create/write-open/truncate, rename/link/symlink/unlink,
mkdir/rmdir, chown, utimes, setxattr of security.capability, log truncation."""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest

from threatseer.native import Probe


@pytest.fixture
def watched(probe: Probe, events, tmp_path: Path) -> Iterator[Path]:
    """tmp_path watched (its log/ a log directory) for one test; nothing watched after."""
    (tmp_path / "log").mkdir()
    probe.set_watched_paths([f"{tmp_path}/"], log_paths=[f"{tmp_path}/log/"])
    try:
        yield tmp_path
    finally:
        probe.set_watched_paths([], log_paths=[])


def change(action: str, path) -> callable:
    return lambda e: (e["event.action"] == action and e.get("file.path") == str(path)
                      and e["process.pid"] == os.getpid())


def test_setuid_chmod_is_reported_anywhere_but_plain_chmod_is_not(probe, events, tmp_path):
    probe.set_watched_paths([])
    target = tmp_path / "tool"
    target.write_text("#!/bin/sh\n")
    before = probe.counters()["change_filtered"]
    os.chmod(target, 0o644)
    os.chmod(target, 0o4755)
    (ev,) = events.wait(change("chmod", target))
    assert ev["file.mode"] == "4755"
    assert ev["threatseer.file.setuid"] is True and ev["threatseer.file.setgid"] is False
    assert ev["event.category"] == ["file"] and ev["event.type"] == ["change"]
    assert ev["event.outcome"] == "success" and ev["threatseer.file.result"] == 0
    assert ev["user.id"] == str(os.getuid())
    assert probe.counters()["change_filtered"] > before   # the 0644 chmod, dropped in-kernel

    fd = os.open(target, os.O_RDONLY)
    try:
        os.fchmod(fd, 0o2750)
    finally:
        os.close(fd)
    (ev,) = events.wait(lambda e: change("chmod", target)(e) and e["file.mode"] == "2750")
    assert ev["threatseer.file.setgid"] is True and ev["threatseer.file.setuid"] is False


def test_rename_link_symlink_unlink_under_a_watched_prefix(events, watched):
    a, b, c, s = (watched / n for n in ("a", "b", "c", "s"))
    a.write_text("x")
    os.rename(a, b)
    os.link(b, c)
    os.symlink("/etc/passwd", s)
    for p in (b, c, s):
        os.unlink(p)

    # rename, link: file.path is the new name, the old one (the existing file) beside it
    (ev,) = events.wait(change("rename", b))
    assert ev["threatseer.file.source_path"] == str(a) and "file.target_path" not in ev
    assert ev["event.type"] == ["change"] and ev["event.outcome"] == "success"
    (ev,) = events.wait(change("link", c))
    assert ev["threatseer.file.source_path"] == str(b) and ev["event.type"] == ["creation"]
    (ev,) = events.wait(change("symlink", s))
    assert ev["file.target_path"] == "/etc/passwd" and ev["event.type"] == ["creation"]
    for p in (b, c, s):
        (ev,) = events.wait(change("unlink", p))
        assert ev["event.category"] == ["file"] and ev["event.type"] == ["deletion"]
        assert ev["threatseer.file.result"] == 0


def test_relative_paths_are_joined_to_the_cwd_and_dirfd(events, watched):
    cwd = os.getcwd()
    os.chdir(watched)
    try:
        os.mkdir("rel-dir", 0o750)
    finally:
        os.chdir(cwd)
    (ev,) = events.wait(change("mkdir", watched / "rel-dir"))
    assert ev["file.mode"] == "0750" and ev["event.type"] == ["creation"]

    dfd = os.open(watched / "rel-dir", os.O_RDONLY | os.O_DIRECTORY)
    try:
        Path(watched / "rel-dir" / "old").write_text("x")
        os.rename("old", "new", src_dir_fd=dfd, dst_dir_fd=dfd)
        os.unlink("new", dir_fd=dfd)
    finally:
        os.close(dfd)
    (ev,) = events.wait(change("rename", watched / "rel-dir" / "new"))
    assert ev["threatseer.file.source_path"] == str(watched / "rel-dir" / "old")
    assert events.wait(change("unlink", watched / "rel-dir" / "new"))

    os.rmdir(watched / "rel-dir")
    (ev,) = events.wait(change("rmdir", watched / "rel-dir"))
    assert ev["event.type"] == ["deletion"]


def test_failed_change_reports_errno(events, watched):
    with pytest.raises(FileNotFoundError):
        os.unlink(watched / "missing")
    (ev,) = events.wait(change("unlink", watched / "missing"))
    assert ev["event.outcome"] == "failure" and ev["threatseer.file.result"] == -2


def test_create_write_open_and_truncating_open(events, watched):
    target = watched / "conf"
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
    os.close(fd)
    (ev,) = events.wait(change("create", target))
    assert ev["file.mode"] == f"{0o640 & ~_umask():04o}"   # the inode's, after the umask
    assert ev["threatseer.open.flags"] == ["write", "create"]
    assert ev["threatseer.file.result"] == fd and ev["event.type"] == ["creation"]

    os.close(os.open(target, os.O_WRONLY | os.O_APPEND))
    (ev,) = events.wait(change("write-open", target))
    assert ev["threatseer.open.flags"] == ["write"] and ev["event.type"] == ["change"]

    os.close(os.open(target, os.O_RDWR | os.O_TRUNC))
    (ev,) = events.wait(change("truncate", target))
    assert ev["threatseer.open.flags"] == ["read", "write", "truncate"]

    os.close(os.open(target, os.O_RDONLY))   # reading is not a change
    os.unlink(target)
    events.wait(change("unlink", target))
    assert [e for e in events.events if e.get("file.path") == str(target)
            and e["event.action"] not in ("create", "write-open", "truncate", "unlink")] == []


def _umask() -> int:
    old = os.umask(0)
    os.umask(old)
    return old


def test_truncate_ftruncate_and_log_truncation(events, watched):
    data = watched / "data"
    data.write_text("0123456789")
    os.truncate(data, 4)
    (ev,) = events.wait(change("truncate", data))
    assert ev["file.size"] == 4 and ev["event.outcome"] == "success"
    fd = os.open(data, os.O_RDWR)
    try:
        os.ftruncate(fd, 2)
    finally:
        os.close(fd)
    (ev,) = events.wait(lambda e: change("truncate", data)(e) and e.get("file.size") == 2)
    assert ev["threatseer.file.result"] == 0

    log = watched / "log" / "auth.log"
    log.write_text("evidence\n")
    os.close(os.open(log, os.O_WRONLY | os.O_TRUNC))
    (ev,) = events.wait(change("log-truncate", log))
    assert ev["threatseer.open.flags"] == ["write", "truncate"]
    assert ev["event.type"] == ["change", "deletion"]
    log.write_text("more\n")
    os.truncate(log, 0)
    (ev,) = events.wait(lambda e: change("log-truncate", log)(e) and e.get("file.size") == 0)
    os.truncate(log, 1)   # not emptied: a plain truncate
    (ev,) = events.wait(lambda e: change("truncate", log)(e) and e.get("file.size") == 1)


def test_chown_and_explicit_mtime(events, watched):
    target = watched / "owned"
    target.write_text("x")
    os.chown(target, 1234, -1)
    (ev,) = events.wait(change("chown", target))
    assert ev["file.uid"] == "1234" and "file.gid" not in ev
    os.chown(target, -1, 4321)
    (ev,) = events.wait(lambda e: change("chown", target)(e) and "file.gid" in e)
    assert ev["file.gid"] == "4321" and "file.uid" not in ev

    os.utime(target, ns=(1_000_000_000, 1_234_567_890_123_456_789))
    (ev,) = events.wait(change("utimes", target))
    assert ev["file.mtime"] == "2009-02-13T23:31:30.123456Z"
    os.utime(target)   # "now": a change, but no explicit time
    (ev,) = events.wait(lambda e: change("utimes", target)(e) and "file.mtime" not in e)
    assert ev["event.outcome"] == "success"


def test_setxattr_of_file_capabilities(events, watched):
    target = watched / "pinger"
    target.write_text("x")
    os.setxattr(target, "user.note", b"not reported")
    # vfs_cap_data v2: magic | effective, permitted CAP_NET_RAW (13) + CAP_SETUID (7)
    blob = struct.pack("<5I", 0x02000000 | 1, (1 << 13) | (1 << 7), 0, 0, 0)
    os.setxattr(target, "security.capability", blob)
    (ev,) = events.wait(change("setxattr", target))
    assert ev["threatseer.xattr.name"] == "security.capability"
    assert ev["threatseer.xattr.capabilities.permitted"] == ["CAP_SETUID", "CAP_NET_RAW"]
    assert ev["threatseer.xattr.capabilities.inheritable"] == []
    assert ev["threatseer.xattr.capabilities.effective"] is True
    assert ev["event.outcome"] == "success"
    assert len([e for e in events.events if change("setxattr", target)(e)]) == 1


def test_live_update_stops_and_wildcards_match(events, probe, watched):
    (watched / "alice" / ".ssh").mkdir(parents=True)
    (watched / "bob").mkdir()
    probe.set_watched_paths([f"{watched}/*/.ssh/"])
    (watched / "bob" / "k").write_text("x")
    os.unlink(watched / "bob" / "k")                      # outside: not reported
    keys = watched / "alice" / ".ssh" / "authorized_keys"
    keys.write_text("ssh-ed25519 AAAA")
    (ev,) = events.wait(change("create", keys))
    assert ev["file.path"] == str(keys)
    assert not [e for e in events.events if e.get("file.path") == str(watched / "bob" / "k")]

    probe.set_watched_paths([])
    os.unlink(keys)
    events.settle()
    assert not [e for e in events.events if change("unlink", keys)(e)]


def test_bad_watched_paths_are_rejected_and_filter_kept(events, probe, watched):
    for bad in ("relative", "/a/b*/", "/*/x/*/"):
        with pytest.raises(ValueError):
            probe.set_watched_paths([f"{watched}/", bad])
    (watched / "still").write_text("x")
    assert events.wait(change("create", watched / "still"))
