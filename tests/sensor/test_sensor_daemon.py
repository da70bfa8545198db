"""The real sensor process end to end: kernel events, enrichment, stdout and hub output."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import yaml
import zmq

from threatseer.common import ecs, wire
from threatseer.hub.validate import problems

from .conftest import action, bpf_prog_ids_of, loaded_prog_ids  # noqa: TID252

MEMCG = "/sys/fs/cgroup/memory"


def test_exec_and_sensitive_open_are_enriched(start_sensor):
    marker = f"marker-{uuid.uuid4().hex[:8]}"
    sensor = start_sensor()
    subprocess.run(["/bin/echo", marker, "second arg"], check=True, stdout=subprocess.DEVNULL)
    subprocess.run(["cat", "/etc/shadow"], check=True, stdout=subprocess.DEVNULL)

    ex = sensor.wait_for(lambda e: action("exec")(e) and marker in e["process"]["args"])
    proc = ex["process"]
    assert proc["executable"] == "/usr/bin/echo"
    assert proc["args"] == ["/bin/echo", marker, "second arg"]
    assert proc["command_line"] == f"/bin/echo {marker} second arg"
    assert proc["parent"]["pid"] == os.getpid()
    assert proc["parent"]["executable"] == os.path.realpath(sys.executable)
    assert len(proc["hash"]["sha256"]) == 64
    assert ex["user"]["id"] == "0" and ex["user"]["name"] == "root"
    assert ex["host"]["name"] and ex["agent"]["id"].startswith("s-")
    assert ex["threatseer"]["ancestors"][0] == os.path.basename(os.path.realpath(sys.executable))
    assert problems([ecs.flatten(ex)]) == []

    # this test's cat (another on a shared machine may read /etc/shadow too)
    op = sensor.wait_for(lambda e: action("open")(e) and e["file"]["path"] == "/etc/shadow"
                         and e["process"].get("name") == "cat"
                         and e["process"].get("parent", {}).get("pid") == os.getpid())
    assert "read" in op["threatseer"]["open"]["flags"]
    assert op["event"]["outcome"] == "success"
    assert op["process"]["executable"] == "/usr/bin/cat"
    assert op["process"]["parent"]["pid"] == os.getpid()

    ex_end = sensor.wait_for(lambda e: action("exit")(e) and e["process"]["pid"] == proc["pid"])
    assert ex_end["process"]["exit_code"] == 0


def test_sighup_applies_new_sensitive_paths_and_survives_a_bad_config(start_sensor, tmp_path):
    watched = tmp_path / "watched"
    watched.mkdir()
    sensor = start_sensor(sensitive_paths=["/etc/shadow"])
    (watched / "before").write_text("x")
    sensor.config_path.write_text(yaml.safe_dump({"sensitive_paths": [f"{watched}/"],
                                                  "health_interval_s": 1.0}))
    sensor.proc.send_signal(signal.SIGHUP)
    time.sleep(0.5)
    (watched / "after").write_text("x")
    ev = sensor.wait_for(lambda e: action("open")(e)
                         and e["file"]["path"] == f"{watched}/after")
    assert "write" in ev["threatseer"]["open"]["flags"]
    assert not any(e.get("file", {}).get("path") == f"{watched}/before" for e in sensor.events)

    sensor.config_path.write_text("batch_size: lots\n")
    sensor.proc.send_signal(signal.SIGHUP)
    time.sleep(0.5)
    (watched / "still").write_text("x")
    sensor.wait_for(lambda e: action("open")(e) and e["file"]["path"] == f"{watched}/still")
    assert sensor.proc.poll() is None
    assert "reload refused" in sensor.stderr_path.read_text()


def test_container_lifecycle_from_memory_cgroups(start_sensor):
    if not os.path.isdir(MEMCG):
        pytest.skip("no v1 memory cgroup hierarchy")
    cid = uuid.uuid4().hex + uuid.uuid4().hex
    path = f"{MEMCG}/{cid}"
    sensor = start_sensor()
    try:
        os.mkdir(path)
        subprocess.run(["sh", "-c", f"echo $$ > {path}/cgroup.procs && exec /bin/true inside"],
                       check=True)
        created = sensor.wait_for(lambda e: action("container-created")(e)
                                  and e.get("container", {}).get("id") == cid)
        assert created["event"]["type"] == ["change"]
        ex = sensor.wait_for(lambda e: action("exec")(e) and e["process"]["args"] == [
            "/bin/true", "inside"])
        assert ex["container"]["id"] == cid
        started = sensor.wait_for(lambda e: action("container-started")(e)
                                  and e["container"]["id"] == cid)
        assert started["process"]["pid"] == ex["process"]["pid"]
    finally:
        deadline = time.monotonic() + 5
        while os.path.isdir(path) and time.monotonic() < deadline:
            try:
                os.rmdir(path)
            except OSError:
                time.sleep(0.1)
    sensor.wait_for(lambda e: action("container-destroyed")(e)
                    and e.get("container", {}).get("id") == cid)


def _cgroup2_root() -> str | None:
    with open("/proc/self/mounts") as f:
        for line in f:
            parts = line.split()
            if len(parts) > 2 and parts[2] == "cgroup2":
                return parts[1]
    return None


def _rmdir(path: str) -> None:
    deadline = time.monotonic() + 5
    while os.path.isdir(path) and time.monotonic() < deadline:
        try:
            os.rmdir(path)
        except OSError:
            time.sleep(0.1)


def test_container_identity_from_the_unified_cgroup_hierarchy(start_sensor):
    """As on v2-only hosts: a container is a cgroup named after it in the unified hierarchy,
    learned from the kernel's cgroup events (created after start) or from the scan at start
    (created before), and the processes in it carry its id."""
    root = _cgroup2_root()
    if root is None:
        pytest.skip("no cgroup2 hierarchy mounted")
    before = uuid.uuid4().hex + uuid.uuid4().hex
    after = uuid.uuid4().hex + uuid.uuid4().hex
    paths = [f"{root}/docker-{before}.scope", f"{root}/docker-{after}.scope"]
    os.mkdir(paths[0])
    try:
        sensor = start_sensor()
        os.mkdir(paths[1])
        created = sensor.wait_for(lambda e: action("container-created")(e)
                                  and e.get("container", {}).get("id") == after)
        assert created["threatseer"]["cgroup"]["hierarchy"] == 0
        for cid, path in ((before, paths[0]), (after, paths[1])):
            subprocess.run(["sh", "-c", f"echo $$ > {path}/cgroup.procs && exec /bin/true {cid}"],
                           check=True)
            ex = sensor.wait_for(lambda e, cid=cid: action("exec")(e)
                                 and e["process"]["args"] == ["/bin/true", cid])
            assert ex["container"]["id"] == cid
            sensor.wait_for(lambda e, cid=cid: action("container-started")(e)
                            and e["container"]["id"] == cid)
    finally:
        for path in paths:
            _rmdir(path)
    gone = sensor.wait_for(lambda e: action("container-destroyed")(e)
                           and e.get("container", {}).get("id") == after)
    assert gone["event"]["action"] == "container-destroyed"
    # one event per container, even where a runtime makes cgroups in two hierarchies
    assert len([e for e in sensor.events if action("container-created")(e)
                and e.get("container", {}).get("id") == after]) == 1


def test_batches_reach_a_hub_socket_in_order(threatseer_cmd, tmp_path, port):
    if os.geteuid() != 0:
        pytest.skip("the sensor needs root for eBPF")
    ctx = zmq.Context.instance()
    pull = ctx.socket(zmq.ROUTER)  # the hub's socket type; acks each batch like a hub
    pull.bind(f"tcp://127.0.0.1:{port}")
    cfg = tmp_path / "sensor.yaml"
    cfg.write_text(yaml.safe_dump({"hub": f"tcp://127.0.0.1:{port}", "batch_latency_ms": 20,
                                   "health_interval_s": 1.0, "sensor_id": "s-wiretest",
                                   "plaintext": True, "state_dir": str(tmp_path / "state")}))
    proc = subprocess.Popen([*threatseer_cmd, "sensor", "-c", str(cfg)],
                            stderr=subprocess.PIPE, text=True)
    seqs, events = [], []
    try:
        assert pull.poll(60_000), "no batch from the sensor"
        held = bpf_prog_ids_of(proc.pid)
        assert len(held) >= 6 and held <= loaded_prog_ids()
        marker = f"wire-{uuid.uuid4().hex[:8]}"
        subprocess.run(["/bin/echo", marker], check=True, stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if not pull.poll(200):
                continue
            frames = pull.recv_multipart()
            batch = wire.decode(frames[1:])
            pull.send_multipart([frames[0], wire.encode_ack(batch.epoch, batch.seq)])
            assert batch.sensor_id == "s-wiretest"
            seqs.append(batch.seq)
            events.extend(batch.events)
            if any(marker in e.get("process.args", []) for e in events):
                break
        assert any(marker in e.get("process.args", []) for e in events)
        assert seqs == list(range(1, len(seqs) + 1))
        # attached, privileges dropped, an executable hashed: none of the libraries the
        # sensor does without is mapped (ctypes and libffi, OpenSSL: sensor/digest.py)
        maps = Path(f"/proc/{proc.pid}/maps").read_text()
        assert not [lib for lib in ("_ctypes", "libffi", "_hashlib", "libcrypto")
                    if lib in maps]
        for ev in events:
            assert problems([ev]) == [], ev
    finally:
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(20)
        pull.close(0)
    stderr = proc.stderr.read()
    assert rc == 0, stderr
    assert "sensor stopped" in stderr
    assert not held & loaded_prog_ids(), "the sensor's BPF programs outlived it"
