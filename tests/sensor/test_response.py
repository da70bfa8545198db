"""The sensor's kill path (sensor/response.py) on real processes: it kills the process a
command names, never a pid another process has taken since (a real reused pid, made with
ns_last_pid), never pid 1, kernel threads, itself or protected names, and a dry run kills
nothing. Only processes this test started are targets."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest

from threatseer.common import wire
from threatseer.sensor.proctable import ProcessTable
from threatseer.sensor.response import Responder, _stat

if os.geteuid() != 0:
    pytest.skip("killing other processes and setting ns_last_pid need root",
                allow_module_level=True)


@pytest.fixture
def responder() -> Responder:
    return Responder(ProcessTable("test-host"), protected=["sshd"], max_kills_per_minute=100)


@pytest.fixture
def sleepers() -> Iterator[list[subprocess.Popen]]:
    procs: list[subprocess.Popen] = []
    try:
        yield procs
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait()


def entity_of(r: Responder, pid: int) -> str:
    return r.procs.entity_id(pid, _stat(pid)[2])


def command(pid: int, entity: str, **kw) -> wire.KillCommand:
    return wire.KillCommand(id=f"c-{pid}-{time.monotonic_ns()}", pid=pid, entity_id=entity,
                            event_id="alert-1", rule="r", **kw)


def test_kills_the_named_process_and_reports_it(responder, sleepers) -> None:
    p = subprocess.Popen(["sleep", "30"])
    sleepers.append(p)
    ev = responder.kill(command(p.pid, entity_of(responder, p.pid)))
    assert p.wait(5) == -9
    assert ev["event.action"] == "kill" and ev["event.outcome"] == "success"
    assert ev["process.name"] == "sleep" and ev["threatseer.response.event_id"] == "alert-1"
    # again: the process is gone now
    again = responder.kill(command(p.pid, entity_of(responder, os.getpid())))
    assert again["event.outcome"] == "failure"


def test_a_pid_reused_by_an_innocent_process_is_not_killed(responder, sleepers) -> None:
    first = subprocess.Popen(["sleep", "30"])
    pid, stale = first.pid, entity_of(responder, first.pid)
    first.kill()
    first.wait()
    time.sleep(0.02)  # a new process must start in another clock tick to differ
    innocent = None
    for _ in range(200):  # make the kernel hand out that pid again (others fork too)
        with open("/proc/sys/kernel/ns_last_pid", "w") as f:
            f.write(str(pid - 1))
        p = subprocess.Popen(["sleep", "30"])
        sleepers.append(p)
        if p.pid == pid:
            innocent = p
            break
    assert innocent is not None, "could not get the pid reused"
    ev = responder.kill(command(pid, stale))
    assert ev["event.outcome"] == "failure" and "pid reused" in ev["event.reason"]
    time.sleep(0.2)
    assert innocent.poll() is None, "the innocent process was killed"


def test_never_pid_1_kernel_threads_itself_or_protected_names(responder, sleepers,
                                                                tmp_path: Path) -> None:
    for pid, why in ((2, "kernel thread"), (os.getpid(), "the sensor itself")):
        ev = responder.kill(command(pid, entity_of(responder, pid)))
        assert ev["event.outcome"] == "failure", why
    assert "kernel thread" in responder.kill(command(2, entity_of(responder, 2)))["event.reason"]
    with pytest.raises(wire.WireError):  # pid 1 cannot even be asked for
        wire.decode_reply(msgspec.msgpack.encode({"cmd": "kill", "id": "c", "pid": 1,
                                                  "entity_id": "e"}))
    sshd = tmp_path / "sshd"
    shutil.copyfile("/bin/sleep", sshd)
    sshd.chmod(0o755)
    p = subprocess.Popen([str(sshd), "30"])
    sleepers.append(p)
    ev = responder.kill(command(p.pid, entity_of(responder, p.pid)))
    assert ev["event.reason"] == "refused: protected process (sshd)"
    time.sleep(0.1)
    assert p.poll() is None


def test_dry_run_kills_nothing_and_the_switch_refuses(responder, sleepers) -> None:
    p = subprocess.Popen(["sleep", "30"])
    sleepers.append(p)
    ev = responder.kill(command(p.pid, entity_of(responder, p.pid), dry_run=True))
    assert ev["event.outcome"] == "unknown" and ev["threatseer.response.dry_run"] is True
    responder.allow_kill = False
    ev = responder.kill(command(p.pid, entity_of(responder, p.pid)))
    assert ev["event.outcome"] == "failure" and "allow_kill" in ev["event.reason"]
    time.sleep(0.1)
    assert p.poll() is None


def test_the_rate_limit_and_a_command_carried_out_once(sleepers) -> None:
    r = Responder(ProcessTable("test-host"), max_kills_per_minute=1)
    a, b = (subprocess.Popen(["sleep", "30"]) for _ in range(2))
    sleepers.extend((a, b))
    cmd = command(a.pid, entity_of(r, a.pid))
    assert r.handle(cmd)[0]["event.outcome"] == "success"
    assert r.handle(cmd) == []  # the same command again (a resend): nothing more
    ev = r.handle(command(b.pid, entity_of(r, b.pid)))[0]
    assert ev["event.outcome"] == "failure" and "rate limit" in ev["event.reason"]
    assert b.poll() is None
