"""In-kernel exec enforcement (bpf/enforce.bpf.c) on the real kernel: a denied exec is killed
before its first instruction (its first act, writing a marker file, never happens), dry runs
and protected names only report, the window limits kills. Every denylist entry here is scoped
to this test's own directory or memfd name, and the policy is cleared in finally."""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from threatseer.native import Probe
from threatseer.native.probe import EXEC_KINDS

ANY, MEMFD, DELETED = EXEC_KINDS["any"], EXEC_KINDS["memfd"], EXEC_KINDS["deleted"]
TOUCH = shutil.which("touch")


@pytest.fixture(scope="module")
def enforcer() -> Iterator[Probe]:
    p = Probe(ring_buffer_kib=1024, self_tgid=0, enforce=True)
    try:
        assert p.enforce_refused == "", p.enforce_refused
        yield p
    finally:
        try:
            p.set_exec_policy({})
        finally:
            p.close()


@pytest.fixture
def scoped(enforcer: Probe, tmp_path: Path) -> Iterator[tuple[Probe, Path]]:
    try:
        yield enforcer, tmp_path
    finally:
        enforcer.set_exec_policy({})


def execs_of(probe: Probe, exe: str) -> list[dict]:
    return [e for e in probe.poll(timeout_ms=200, max_events=1 << 20)
            if e["event.action"] == "exec" and e.get("process.executable", "").startswith(exe)]


def program(where: Path) -> Path:
    where.mkdir(parents=True, exist_ok=True)
    exe = where / "touch"
    shutil.copyfile(TOUCH, exe)
    exe.chmod(0o755)
    return exe


def test_a_denied_exec_never_runs_and_its_exec_event_says_so(scoped) -> None:
    probe, tmp = scoped
    exe = program(tmp / "deny")
    probe.set_exec_policy({f"{tmp}/deny/": (ANY, 0, (3, 0, 0))})
    probe.poll(timeout_ms=0, max_events=1 << 20)
    marker = tmp / "marker"
    assert subprocess.run([exe, marker]).returncode == -9
    assert not marker.exists()
    (ev,) = execs_of(probe, str(exe))
    assert ev["threatseer.enforce.verdict"] == "killed"
    assert ev["threatseer.enforce.rule_id"] == 3
    # outside the prefix, and once the policy is gone, the same program runs
    other = program(tmp / "allowed")
    assert subprocess.run([other, marker]).returncode == 0 and marker.exists()
    marker.unlink()
    probe.set_exec_policy({})
    assert subprocess.run([exe, marker]).returncode == 0 and marker.exists()


def test_dry_run_protected_names_and_the_window_only_report(scoped) -> None:
    probe, tmp = scoped
    exe = program(tmp / "dry")
    probe.set_exec_policy({f"{tmp}/dry/": (0, ANY, (1, 0, 0))})
    probe.poll(timeout_ms=0, max_events=1 << 20)
    marker = tmp / "marker"
    assert subprocess.run([exe, marker]).returncode == 0 and marker.exists()
    (ev,) = execs_of(probe, str(exe))
    assert ev["threatseer.enforce.verdict"] == "dry-run"
    probe.set_exec_policy({f"{tmp}/guarded/": (ANY, 0, (2, 0, 0))}, protected=["touch"])
    guarded = program(tmp / "guarded")
    assert subprocess.run([guarded, marker]).returncode == 0
    (ev,) = execs_of(probe, str(guarded))
    assert ev["threatseer.enforce.verdict"] == "protected"

    limited = program(tmp / "limited")
    probe.set_exec_policy({f"{tmp}/limited/": (ANY, 0, (4, 0, 0))}, max_kills=2, window_s=600)
    codes = [subprocess.run([limited, marker]).returncode for _ in range(4)]
    assert codes == [-9, -9, 0, 0]
    verdicts = [e["threatseer.enforce.verdict"] for e in execs_of(probe, str(limited))]
    assert verdicts == ["killed", "killed", "limited", "limited"]


def test_fileless_and_deleted_executables_scoped_to_this_test(scoped) -> None:
    probe, tmp = scoped
    name = f"ts-enforce-{uuid.uuid4().hex[:8]}"
    # memfds named like this test's, and deleted files under its directory: nothing else
    probe.set_exec_policy({f"/memfd:{name}": (MEMFD, 0, (0, 5, 0)),
                           f"{tmp}/del/": (DELETED, 0, (0, 0, 6))})
    probe.poll(timeout_ms=0, max_events=1 << 20)
    marker = tmp / "marker"

    def run_fd(fd: int) -> int:
        pid = os.fork()
        if pid == 0:
            try:
                os.execve(fd, ["touch", str(marker)], {})
            finally:
                os._exit(127)
        return os.waitpid(pid, 0)[1]

    fd = os.memfd_create(name, 0)
    try:
        with open(TOUCH, "rb") as src:
            os.write(fd, src.read())
        status = run_fd(fd)
    finally:
        os.close(fd)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == 9 and not marker.exists()
    (ev,) = execs_of(probe, f"/memfd:{name}")
    assert ev["threatseer.enforce.verdict"] == "killed"
    assert ev["threatseer.enforce.rule_id"] == 5

    kept = program(tmp / "del")  # not deleted: the rule is for deleted files only
    assert subprocess.run([kept, marker]).returncode == 0 and marker.exists()
    marker.unlink()
    fd = os.open(kept, os.O_RDONLY)
    try:
        kept.unlink()
        status = run_fd(fd)
    finally:
        os.close(fd)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == 9 and not marker.exists()
    verdicts = [e.get("threatseer.enforce.verdict") for e in execs_of(probe, str(kept))]
    assert verdicts == [None, "killed"]
