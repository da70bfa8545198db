"""Where the sensor's kernel does not enforce exec rules (a kernel that refuses the program,
or ``enforce_in_kernel: false``), the sensor says so in one log line and the hub kills a
denied exec through the hub-driven path when its event arrives. Only this test's programs,
under its own directory, are targets."""

from __future__ import annotations

import subprocess
import time

from threatseer.common import ecs


def test_the_hub_kills_a_denied_exec_where_the_kernel_does_not(hub_only_stack) -> None:
    stack = hub_only_stack
    log = stack.sensor_log.read_text()
    assert "not enforced in the kernel (enforce_in_kernel is false)" in log, log
    exe = stack.program("deny")
    pid = stack.run_until_killed(exe)
    ex = stack.events.wait(lambda e: e.get("event.action") == "exec"
                           and e.get("process.pid") == pid)
    assert "threatseer.enforce.verdict" not in ex  # the kernel let it run
    assert ex["threatseer.response.status"] == "sent"
    assert ex["threatseer.response.rule"] == "test_deny_exec"
    report = stack.events.wait(lambda e: e.get("event.action") == ecs.KILL
                               and e.get("threatseer.response.event_id") == ex["event.id"])
    assert report["threatseer.response.source"] == "hub"
    assert report["event.outcome"] == "success"
    # an exec elsewhere is left alone
    free = stack.program("free")
    other = subprocess.Popen([str(free), "30"])
    try:
        time.sleep(0.5)
        assert other.poll() is None
    finally:
        other.kill()
        other.wait()
