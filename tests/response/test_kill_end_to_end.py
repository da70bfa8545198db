"""The kill action through the whole system: kernel event -> sensor -> hub rule with
``action: kill`` -> command on the sensor's connection -> pidfd kill -> ``kill`` event; and
the kernel's own enforcement at exec. Only processes and paths this test made are targets."""

from __future__ import annotations

import os
import subprocess
import time
import uuid

from tests.response.conftest import denied_exec_killed_in_kernel, kill_event_for


def test_a_rule_with_action_kill_kills_the_process_and_reports_it(stack) -> None:
    exe = stack.program("kill")
    pid = stack.run_until_killed(exe)
    alert = stack.events.wait(lambda e: e.get("process.pid") == pid
                              and e.get("event.action") == "exec")
    assert alert["event.kind"] == "alert"
    assert alert["threatseer.response.status"] == "sent"
    assert alert["threatseer.response.rule"] == "test_kill"
    report = stack.events.wait(kill_event_for(alert))
    assert report["event.outcome"] == "success" and report["event.reason"] == "killed"
    assert report["process.pid"] == pid
    assert report["process.entity_id"] == alert["process.entity_id"]
    assert report["threatseer.response.source"] == "hub"
    assert report["threatseer.response.id"] == alert["threatseer.response.id"]
    assert report["threatseer.response.dry_run"] is False


def test_dry_run_kills_nothing_and_says_what_it_would_have(stack) -> None:
    exe = stack.program("dry")
    child = subprocess.Popen([str(exe), "30"])
    try:
        alert = stack.events.wait(lambda e: e.get("process.pid") == child.pid
                                  and e.get("event.action") == "exec")
        assert alert["threatseer.response.status"] == "dry-run"
        report = stack.events.wait(kill_event_for(alert))
        assert report["event.outcome"] == "unknown"
        assert report["event.reason"].startswith("dry run")
        assert report["threatseer.response.dry_run"] is True
        time.sleep(0.3)
        assert child.poll() is None, "a dry run killed"
    finally:
        child.kill()
        child.wait()


def test_rules_the_config_does_not_allow_and_protected_processes_are_not_killed(stack) -> None:
    exe = stack.program("alert")
    child = subprocess.Popen([str(exe), "30"])
    protected = stack.program("kill", name="sshd")  # matches test_kill, but is "sshd"
    guarded = subprocess.Popen([str(protected), "30"])
    try:
        alert = stack.events.wait(lambda e: e.get("process.pid") == child.pid
                                  and e.get("event.action") == "exec")
        assert alert["threatseer.response.status"] == "refused"
        assert "response.kill_rules" in alert["threatseer.response.reason"]
        alert = stack.events.wait(lambda e: e.get("process.pid") == guarded.pid
                                  and e.get("event.action") == "exec")
        assert alert["threatseer.response.status"] == "refused"
        assert alert["threatseer.response.reason"] == "protected process (sshd)"
        time.sleep(0.5)
        assert child.poll() is None and guarded.poll() is None
    finally:
        for p in (child, guarded):
            p.kill()
            p.wait()


def test_the_kernel_kills_a_denied_exec_before_its_first_instruction(stack) -> None:
    marker, report = denied_exec_killed_in_kernel(stack)
    assert report["threatseer.response.rule"] == "test_deny_exec"
    # the same program elsewhere runs
    free = stack.program("free", name="touch", src="/usr/bin/touch")
    assert subprocess.run([str(free), str(marker)], timeout=10).returncode == 0
    assert marker.exists()


def test_the_kernel_kills_a_deleted_file_run_from_its_directory(stack) -> None:
    exe = stack.program("del", name="touch", src="/usr/bin/touch")
    marker = stack.base / f"marker-{uuid.uuid4().hex[:8]}"
    fd = os.open(exe, os.O_RDONLY)
    try:
        exe.unlink()
        pid = os.fork()
        if pid == 0:  # the child runs the deleted file through its fd
            try:
                os.execve(fd, ["touch", str(marker)], {})
            finally:
                os._exit(127)
    finally:
        os.close(fd)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == 9
    assert not marker.exists()
    ex = stack.events.wait(lambda e: e.get("event.action") == "exec"
                           and e.get("process.pid") == pid)
    assert ex["threatseer.enforce.verdict"] == "killed"
    assert ex["threatseer.enforce.rule"] == "test_deny_deleted"
