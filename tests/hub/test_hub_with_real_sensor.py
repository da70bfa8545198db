"""One end-to-end run with the real sensor: kernel events (root + eBPF) through the real hub.

Needs root and a kernel with BTF (the sensor loads its BPF programs); skipped otherwise.
"""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from pathlib import Path

import pytest
import zmq
from hub_helpers import HubProcess, Subscriber, endpoint, free_port, write_yaml

from tests.conftest import stop_processes

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not os.path.exists("/sys/kernel/btf/vmlinux"),
    reason="the real sensor needs root and a kernel with BTF")


def test_real_sensor_events_are_scored_and_published(tmp_path, threatseer_cmd) -> None:
    ingest, pub = endpoint(), endpoint()
    hub_cfg = write_yaml(tmp_path / "hub.yaml", {
        "ingest": {"endpoint": ingest}, "publish": {"endpoint": pub},
        "metrics": {"listen": f"127.0.0.1:{free_port()}"},
        "actions": {"toss_below": -1000, "alert_at": 100},
        "bundle": str(ROOT / "rules" / "default"), "state_dir": str(tmp_path / "hub"),
        "admin": {"allow_unsigned": True}, "plaintext": True})
    hub = HubProcess(threatseer_cmd, hub_cfg)
    ctx = zmq.Context()
    sub = Subscriber(ctx, pub)
    sensor_cfg = write_yaml(tmp_path / "sensor.yaml", {
        "hub": ingest, "sensor_id": "real-sensor", "sensitive_paths": ["/etc/shadow"],
        "batch_latency_ms": 20, "health_interval_s": 1.0,
        "state_dir": str(tmp_path / "sensor"), "plaintext": True})
    sensor = subprocess.Popen([*threatseer_cmd, "sensor", "-c", str(sensor_cfg)],
                              stdout=subprocess.DEVNULL, stderr=open(tmp_path / "sensor.err", "w"))  # noqa: SIM115
    marker = f"marker-{uuid.uuid4().hex[:8]}"
    try:
        # the sensor is up once its health events come out of the hub
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            got = sub.recv(0.5)
            if got and got[1].get("event.action") == "sensor-health":
                break
            assert sensor.poll() is None, (tmp_path / "sensor.err").read_text()
        else:
            raise AssertionError("no sensor-health event from the real sensor via the hub")
        subprocess.run(["/bin/echo", marker], check=True, stdout=subprocess.DEVNULL)
        subprocess.run(["cat", "/etc/shadow"], check=True, stdout=subprocess.DEVNULL)
        seen_exec = seen_open = None
        deadline = time.monotonic() + 20
        while (seen_exec is None or seen_open is None) and time.monotonic() < deadline:
            got = sub.recv(0.5)
            if got is None:
                continue
            topic, ev = got
            if ev.get("event.action") == "exec" and marker in (ev.get("process.args") or ()):
                seen_exec = (topic, ev)
            if (ev.get("event.action") == "open" and ev.get("file.path") == "/etc/shadow"
                    and ev.get("process.name") == "cat"):
                seen_open = (topic, ev)
    finally:
        stop_processes(sensor)
        hub.stop()
        ctx.destroy(linger=0)
    assert seen_exec is not None, "the echo exec never came out of the hub"
    topic, ev = seen_exec
    assert topic == "event.process.exec"
    assert ev["agent.id"] == "real-sensor" and ev["threatseer.batch.seq"] >= 1
    assert ev["process.executable"] == "/usr/bin/echo"
    assert seen_open is not None, "the /etc/shadow open never came out of the hub"
    topic, ev = seen_open
    assert topic == "alert.file.open"
    assert ev["event.kind"] == "alert" and ev["event.risk_score"] >= 100
    assert {i["rule"] for i in ev["threatseer.indicators"]} >= {"/etc/shadow"}
