"""Container cgroups in the v1 memory hierarchy, honest loss accounting with a tiny ring,
and close() leaving no programs or links behind."""

from __future__ import annotations

import json
import os
import secrets
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

from threatseer.native import Probe, ProbeError
from threatseer.native.probe import memory_hierarchy

MEMCG = Path("/sys/fs/cgroup/memory")


@pytest.fixture
def container_cgroup():
    if memory_hierarchy() is None or not MEMCG.is_dir():
        pytest.skip("no v1 memory cgroup hierarchy mounted")
    name = secrets.token_hex(32)   # 64 hex chars, like a container id
    path = MEMCG / name
    try:
        yield name, path
    finally:
        for _ in range(50):
            try:
                path.rmdir()
                break
            except FileNotFoundError:
                break
            except OSError:
                time.sleep(0.1)


def test_container_cgroup_created_used_destroyed(events, container_cgroup):
    name, path = container_cgroup
    path.mkdir()
    (made,) = events.wait(lambda e: e["event.action"] == "container-created"
                          and e["threatseer.cgroup.memory"] == name)
    assert made["threatseer.cgroup.path"] == f"/{name}"
    assert made["threatseer.cgroup.hierarchy"] == memory_hierarchy()
    assert made["event.category"] == ["host"] and made["event.type"] == ["change"]
    assert made["process.pid"] == os.getpid()

    proc = subprocess.run(["/bin/sh", "-c", f"echo $$ > {path}/cgroup.procs && exec /bin/true"],
                          check=True)
    assert proc.returncode == 0
    (ex,) = events.wait(lambda e: e["event.action"] == "exec"
                        and e["process.executable"] == os.path.realpath("/bin/true")
                        and e["threatseer.cgroup.memory"] == name)
    assert ex["process.args"] == ["/bin/true"]

    path.rmdir()
    (gone,) = events.wait(lambda e: e["event.action"] == "container-destroyed"
                          and e["threatseer.cgroup.memory"] == name)
    assert gone["threatseer.cgroup.path"] == f"/{name}"
    assert gone["event.type"] == ["end"]


def test_other_hierarchies_are_ignored(events):
    other = Path("/sys/fs/cgroup/pids")
    if not other.is_dir():
        pytest.skip("no v1 pids hierarchy")
    name = secrets.token_hex(32)
    (other / name).mkdir()
    try:
        events.settle(0.3)
    finally:
        (other / name).rmdir()
    assert [e for e in events.events if e.get("threatseer.cgroup.memory") == name] == []


def test_tiny_ring_reports_drops_honestly():
    with Probe(ring_buffer_kib=4, sensitive_paths=["/etc/passwd"], self_tgid=0) as p:
        assert p.counters()["lost"] == 0
        for _ in range(2000):          # a burst, nobody polling
            os.close(os.open("/etc/passwd", os.O_RDONLY))
        lost = p.counters()["lost"]
        got = []
        while batch := p.poll(timeout_ms=0):
            got += batch
        mine = [e for e in got if e["process.pid"] == os.getpid()
                and e.get("file.path") == "/etc/passwd"]
        assert lost > 0
        assert 0 < len(mine) < 2000
        assert len(mine) + lost >= 2000   # every open is either delivered or counted lost


def test_poll_respects_max_events_and_loses_nothing(probe):
    probe.set_sensitive_paths(["/etc/passwd"])
    try:
        while probe.poll(timeout_ms=0):
            pass
        for _ in range(50):
            os.close(os.open("/etc/passwd", os.O_RDONLY))
        batches = []
        while batch := probe.poll(timeout_ms=100, max_events=7):
            assert len(batch) <= 7
            batches.append(batch)
        mine = [e for b in batches for e in b
                if e["process.pid"] == os.getpid() and e.get("file.path") == "/etc/passwd"]
        assert len(mine) == 50
    finally:
        probe.set_sensitive_paths(["/etc/shadow"])


def bpf_ids(kind: str) -> set[int]:
    out = subprocess.run(["bpftool", kind, "list", "-j"], capture_output=True, text=True,
                         check=True).stdout
    return {item["id"] for item in json.loads(out or "[]")}


def own_ids(key: str) -> set[int]:
    """prog_id / link_id of the BPF fds this process holds (from /proc/self/fdinfo)."""
    ids = set()
    for fd in os.listdir("/proc/self/fdinfo"):
        try:
            text = Path(f"/proc/self/fdinfo/{fd}").read_text()
        except OSError:
            continue
        for line in text.splitlines():
            if line.startswith(key + ":"):
                ids.add(int(line.split()[1]))
    return ids


def test_close_leaves_no_programs_or_links():
    progs_before, links_before = own_ids("prog_id"), own_ids("link_id")
    maps_before = own_ids("map_id")
    p = Probe(ring_buffer_kib=64, self_tgid=0)
    try:
        progs = own_ids("prog_id") - progs_before
        links = own_ids("link_id") - links_before
        maps = own_ids("map_id") - maps_before
        assert len(links) == len(p.programs) >= 20
        assert progs and progs <= bpf_ids("prog") and links <= bpf_ids("link")
        # the linked program files share ONE copy of each map (one ring buffer); the two
        # tail-call arrays lead to the file-change and "sys" exit handlers
        listed = json.loads(subprocess.run(["bpftool", "map", "list", "-j"],
                                           capture_output=True, text=True, check=True).stdout)
        assert sorted(m["name"] for m in listed if m["id"] in maps) == [
            "ts_calls", "ts_change_tail", "ts_config", "ts_counters", "ts_enforce",
            "ts_enforce_wind", "ts_events", "ts_exec_deny", "ts_inflight", "ts_prefixes",
            "ts_protected", "ts_reader", "ts_scratch", "ts_sys_tail", "ts_verdicts",
            "ts_watched"]
    finally:
        p.close()
    p.close()   # idempotent
    assert not (links & bpf_ids("link"))
    # the kernel frees detached programs after an RCU grace period: give it a moment
    deadline = time.monotonic() + 10
    while progs & bpf_ids("prog") and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not (progs & bpf_ids("prog"))
    with pytest.raises(ProbeError):
        p.poll()


def test_errors_are_probe_errors_with_errno(tmp_path):
    bogus = tmp_path / "not-bpf.o"
    bogus.write_bytes(b"not an ELF file")
    with pytest.raises(ProbeError) as info:
        Probe(bpf_object=str(bogus))
    assert info.value.errno and "opening" in str(info.value)
    with pytest.raises(ValueError):
        Probe(sensitive_paths=["etc/shadow"])


def test_unprivileged_caller_gets_a_clear_eperm():
    """Unprivileged for BPF means without capabilities: the caller keeps uid 0 (so it can
    still read a checkout under a 0700 directory, as ``mktemp -d`` makes) but has none."""
    code = ("from threatseer.native import Probe, ProbeError\n"
            "try:\n    Probe()\nexcept ProbeError as e:\n    print(e.errno, e)\n")
    proc = subprocess.run(["setpriv", "--inh-caps=-all", "--ambient-caps=-all",
                           "--bounding-set=-all", sys.executable, "-c", code],
                          capture_output=True, text=True, timeout=60, cwd="/")
    assert proc.stdout.startswith("1 "), proc.stdout + proc.stderr
    assert "needs root" in proc.stdout


def test_fileno_signals_pending_records():
    with Probe(ring_buffer_kib=256, sensitive_paths=["/etc/shadow"], self_tgid=0,
               wakeup_bytes=0) as p:   # wake per record
        while p.poll(timeout_ms=0):
            pass
        os.close(os.open("/etc/shadow", os.O_RDONLY))
        readable, _, _ = select.select([p.fileno()], [], [], 5)
        assert readable == [p.fileno()]
        assert any(e.get("file.path") == "/etc/shadow" for e in p.poll(timeout_ms=0))
