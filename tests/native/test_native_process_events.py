"""exec, fork and exit records from real processes, field by field; and their enrichment
with parent descriptions kept per process (see the last test)."""

from __future__ import annotations

import copy
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec

from threatseer.common import ecs
from threatseer.native import Probe
from threatseer.sensor.enrich import Enricher
from threatseer.sensor.proctable import ProcessTable, start_ticks

ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")
COMMON = ("@timestamp", "event.kind", "event.category", "event.type", "event.action",
          "process.pid", "process.thread.id", "process.name", "process.parent.pid", "user.id",
          "group.id", "user.effective.id", "threatseer.user.audit.id", "threatseer.cgroup.id",
          "threatseer.cgroup.memory", "threatseer.ns.pid", "threatseer.ns.mnt",
          "process.start")


def own_memcg() -> str:
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.rstrip("\n").split(":", 2)
        if "memory" in controllers.split(","):
            return path.rsplit("/", 1)[-1]
    return ""


def test_exec_fork_exit_of_a_command(events):
    proc = subprocess.Popen(["/bin/echo", "threatseer-arg-1", "two words"],
                            stdout=subprocess.DEVNULL)
    proc.wait()
    pid = proc.pid
    (ex,) = events.wait(lambda e: e["event.action"] == "exec" and e["process.pid"] == pid)
    assert ex["process.executable"] == os.path.realpath("/bin/echo")
    assert ex["process.args"] == ["/bin/echo", "threatseer-arg-1", "two words"]
    assert ex["process.args_count"] == 3
    assert ex["threatseer.args_truncated"] is False
    assert ex["process.name"] == "echo"
    assert ex["process.parent.pid"] == os.getpid()
    assert ex["process.thread.id"] == pid
    assert ex["user.id"] == str(os.getuid()) and ex["user.effective.id"] == str(os.geteuid())
    assert ex["group.id"] == str(os.getgid())
    assert ex["event.kind"] == "event"
    assert ex["event.category"] == ["process"] and ex["event.type"] == ["start"]
    assert ex["threatseer.ns.pid"] == os.stat("/proc/self/ns/pid").st_ino
    assert ex["threatseer.ns.mnt"] == os.stat("/proc/self/ns/mnt").st_ino
    assert ex["threatseer.cgroup.memory"] == own_memcg()
    assert ISO.match(ex["process.start"])
    assert ex["process.session_leader.pid"] == os.getsid(0)
    for key in COMMON:
        assert key in ex, key
    assert ISO.match(ex["@timestamp"])
    when = datetime.strptime(ex["@timestamp"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    assert abs(when.timestamp() - time.time()) < 30

    (fork,) = events.wait(lambda e: e["event.action"] == "fork" and e["process.pid"] == pid)
    assert fork["process.parent.pid"] == os.getpid()
    assert fork["event.type"] == ["start"]

    (end,) = events.wait(lambda e: e["event.action"] == "exit" and e["process.pid"] == pid)
    assert end["process.exit_code"] == 0
    assert "threatseer.exit_signal" not in end
    assert end["event.type"] == ["end"]
    assert end["process.name"] == "echo"
    assert end["process.start"] == ex["process.start"]


def test_process_start_is_the_date_proc_counts_in_ticks(events):
    """process.start is a date; the sensor turns it back into /proc's clock ticks exactly
    (its process ids are made from them, for processes seen at start and seen exec'ing)."""
    proc = subprocess.Popen(["/bin/sleep", "5"])
    try:
        (ex,) = events.wait(lambda e: e["event.action"] == "exec" and e["process.pid"] == proc.pid)
        stat = Path(f"/proc/{proc.pid}/stat").read_text()
        ticks = int(stat.rsplit(")", 1)[1].split()[19])
    finally:
        proc.kill()
        proc.wait()
    started = datetime.strptime(ex["process.start"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    assert abs(started.timestamp() - time.time()) < 30
    assert start_ticks(ex["process.start"]) == ticks


def test_exit_status_and_killing_signal(events):
    proc = subprocess.Popen(["/bin/sh", "-c", "exit 7"])
    proc.wait()
    (end,) = events.wait(lambda e: e["event.action"] == "exit" and e["process.pid"] == proc.pid)
    assert end["process.exit_code"] == 7

    victim = subprocess.Popen(["/bin/sleep", "30"])
    try:
        events.wait(lambda e: e["event.action"] == "exec" and e["process.pid"] == victim.pid)
        victim.send_signal(signal.SIGKILL)
        victim.wait()
        (end,) = events.wait(
            lambda e: e["event.action"] == "exit" and e["process.pid"] == victim.pid)
        assert end["threatseer.exit_signal"] == signal.SIGKILL
        assert end["process.exit_code"] == 128 + signal.SIGKILL
    finally:
        victim.kill()
        victim.wait()


def test_long_argv_is_truncated_and_flagged(events):
    many = ["/bin/true"] + [f"a{i}" for i in range(99)]
    subprocess.run(many, check=True)
    (ex,) = events.wait(lambda e: e["event.action"] == "exec" and e["process.args"][:1] == ["/bin/true"]
                        and e["process.args_count"] == 100)
    assert len(ex["process.args"]) == 64
    assert ex["process.args"][:3] == ["/bin/true", "a0", "a1"]
    assert ex["threatseer.args_truncated"] is True

    big = ["/bin/true", "x" * 3000, "y" * 3000]
    subprocess.run(big, check=True)
    (ex,) = events.wait(lambda e: e["event.action"] == "exec" and e["process.args_count"] == 3
                        and e["process.args"][1:2] == ["x" * 3000])
    assert ex["threatseer.args_truncated"] is True
    assert sum(len(a) + 1 for a in ex["process.args"]) <= 4096 + 1


def test_threads_and_thread_exits_are_not_processes(events):
    ids: list[int] = []
    t = threading.Thread(target=lambda: ids.append(threading.get_native_id()))
    t.start()
    t.join()
    events.settle(0.3)
    mine = [e for e in events.events if e["process.thread.id"] == ids[0]
            or (e["event.action"] in ("fork", "exit") and e["process.pid"] == os.getpid())]
    assert mine == []


def test_own_process_is_filtered_in_the_kernel():
    with Probe(ring_buffer_kib=256, sensitive_paths=["/etc/shadow"]) as p:  # self = us
        before = p.counters()["self_filtered"]
        open("/etc/shadow").close()
        got: list = []
        for _ in range(4):
            got += p.poll(timeout_ms=50)
        assert [e for e in got if e["process.pid"] == os.getpid()] == []
        assert p.counters()["self_filtered"] > before


def test_executable_path_crosses_mounts_for_a_relative_exec(events):
    # /dev/shm is its own tmpfs mount: the dentry walk must climb out of it to '/'
    assert os.path.ismount("/dev/shm")
    workdir = Path(tempfile.mkdtemp(prefix="threatseer-", dir="/dev/shm"))
    try:
        exe = workdir / "true-copy"
        shutil.copy("/bin/true", exe)
        proc = subprocess.run(["./true-copy", "rel"], cwd=workdir, check=True)
        assert proc.returncode == 0
        (ex,) = events.wait(lambda e: e["event.action"] == "exec"
                            and e["process.args"] == ["./true-copy", "rel"])
        assert ex["process.executable"] == str(exe)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def test_one_exit_per_process_when_a_thread_calls_exit(events):
    code = ("import os, threading, time\n"
            "threading.Thread(target=lambda: time.sleep(30), daemon=True).start()\n"
            "t = threading.Thread(target=lambda: os._exit(3))\n"
            "t.start(); time.sleep(30)\n")
    proc = subprocess.Popen([sys.executable, "-c", code])
    assert proc.wait(timeout=60) == 3
    events.wait(lambda e: e["event.action"] == "exit" and e["process.pid"] == proc.pid)
    events.settle(0.3)
    ends = [e for e in events.events
            if e["event.action"] == "exit" and e["process.pid"] == proc.pid]
    assert len(ends) == 1
    assert ends[0]["process.exit_code"] == 3

# ---- Parent descriptions kept per process (sensor/proctable.py) against building them for
# every event, on the real kernel's fork, exec, exit and setuid records of one process tree.
# The tree does what may leave a kept description stale: a parent renames itself (prctl), gains
# a real uid (setresuid, reported by the kernel), and execs another program while a child of it
# still forks: the grandchild must then name the new program among its ancestors.

# The tree's root: starts with real uid 65534 (effective and saved root), so it can gain
# uid 0 later; "late" is a child whose last fork comes after the root's exec (and its
# ancestors were read before it: no other change moves the epoch in between).
ROOT_SCRIPT = r"""
import ctypes, os, subprocess, time
for _ in range(2):
    subprocess.run(["/bin/true"], check=True)
ctypes.CDLL(None).prctl(15, b"renamed-root", 0, 0, 0)  # PR_SET_NAME
subprocess.run(["/bin/true"], check=True)
os.setresuid(0, 0, 0)
late = subprocess.Popen(["/bin/sh", "-c", "/bin/true; sleep 0.5; /bin/true; :"])
time.sleep(0.2)
subprocess.run(["/bin/true"], check=True)
os.execv("/bin/sh", ["sh", "-c", "/bin/true; sleep 0.6"])
"""


def _tree_events(events: Any, root: int) -> list[dict[str, Any]]:
    """The events of ``root`` and its descendants, in kernel order."""
    pids = {root}
    out = []
    for ev in events:
        pid = ev.get("process.pid")
        if ev.get("event.action") == ecs.FORK and ev.get("process.parent.pid") in pids:
            pids.add(pid)
        if pid in pids:
            out.append(ev)
    return out


def test_kept_parent_descriptions_equal_rebuilt_ones(events, tmp_path) -> None:
    kept_table = ProcessTable("host-1")
    kept_table.seed()
    plain_table = copy.deepcopy(kept_table)
    plain_table.reuse = False
    for table in (kept_table, plain_table):  # both see only what the events say from here
        table.proc_root = str(tmp_path)
    root = subprocess.Popen([sys.executable, "-c", ROOT_SCRIPT],
                            preexec_fn=lambda: os.setresuid(65534, 0, 0))
    try:
        assert root.wait(10) == 0
    finally:
        if root.poll() is None:
            root.kill()
            root.wait()
    exits = events.wait(lambda e: e.get("event.action") == ecs.EXIT
                        and e.get("process.pid") == root.pid)
    assert exits, "the root's exit never arrived"
    events.settle(0.2)
    raw = _tree_events(events.events, root.pid)

    outs = []
    for table in (kept_table, plain_table):
        enricher = Enricher("s-test", "h", "host-1", proctable=table, host={})
        outs.append(enricher.enrich(copy.deepcopy(raw)))
    kept, plain = outs
    for a, b in zip(kept, plain, strict=True):  # each enricher's own per-run nonce
        assert a.pop("event.id").endswith("-" + b.pop("event.id").rsplit("-", 1)[1])
    encode = msgspec.msgpack.encode
    assert [encode(e) for e in kept] == [encode(e) for e in plain]

    # ... and the descriptions followed the changes (a stale one would fail these)
    forks = [e for e in kept if e["event.action"] == ecs.FORK
             and e.get("process.parent.pid") == root.pid]
    assert len(forks) >= 6  # 4 runs and "late" from Python, the shell's /bin/true
    users = [f.get("process.parent.user.id") for f in forks]
    assert users[:3] == ["65534"] * 3, users  # before the setresuid
    assert users[3:] == ["0"] * len(users[3:]), users  # after the gain of uid 0 (late: 4th)
    shell_child = forks[-1]
    shell = os.path.basename(os.path.realpath("/bin/sh"))
    assert shell_child["process.parent.name"] == shell
    assert shell_child["process.parent.args"] == ["sh", "-c", "/bin/true; sleep 0.6"]
    python = os.path.basename(os.path.realpath(sys.executable))
    late = forks[3]["process.pid"]
    late_forks = [e for e in kept if e["event.action"] == ecs.FORK
                  and e.get("process.parent.pid") == late]
    assert len(late_forks) >= 2
    # the first fork of "late" ran under the Python root, the last after its exec of sh
    assert late_forks[0]["threatseer.ancestors"][:2] == [shell, python]
    assert late_forks[-1]["threatseer.ancestors"][:2] == [shell, shell]
