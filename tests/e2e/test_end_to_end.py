"""Real sensor → real hub → ZeroMQ subscriber, with the default rule bundle.

Every step is real: eBPF in this kernel, the sensor process, the hub process with its three
engines, the PUB socket. Needs root.
"""

from __future__ import annotations

import os
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
import yaml
import zmq

from tests.conftest import stop_processes
from threatseer.cli.demo import C2_ADDRESS, bundle_with_c2, curve_keys, signed_bundle
from threatseer.common.keys import curve_client, read_key
from threatseer.hub import publish

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the sensor needs root (eBPF)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Pipeline:
    """A hub and a sensor started for one test, and a SUB socket on the hub's PUB."""

    def __init__(self, tmp: Path, threatseer: list[str]) -> None:
        self.ingest = f"tcp://127.0.0.1:{free_port()}"
        self.pub = f"tcp://127.0.0.1:{free_port()}"
        # The default bundle plus one C2 address on loopback to call back to, signed.
        bundle, signer = signed_bundle(bundle_with_c2(ROOT / "rules" / "default",
                                                      tmp / "bundle", C2_ADDRESS))
        hub = {
            "ingest": {"endpoint": self.ingest}, "publish": {"endpoint": self.pub},
            "metrics": {"listen": ""}, "state_dir": str(tmp / "hub"),
            "bundle": str(bundle),
            "admin": {"trusted_signing_keys": [signer]},
            "profiles": {"learn_seconds": 2.0, "learn_min_events": 2},
            "log_level": "warning",
        }
        sensor = {"hub": self.ingest, "batch_latency_ms": 20, "health_interval_s": 1.0,
                  "state_dir": str(tmp / "sensor")}
        # CURVE on both hops, as deployed.
        keys = tmp / "keys"
        keys.mkdir()
        hub_secret, hub_public = curve_keys(keys, "hub")
        sensor_secret, sensor_public = curve_keys(keys, "sensor")
        sub_secret, sub_public = curve_keys(keys, "subscriber")
        hub.update({"curve_secret_key_file": str(hub_secret),
                    "curve_allow_list": str(sensor_public),
                    "curve_subscriber_allow_list": str(sub_public)})
        sensor.update({"curve_secret_key_file": str(sensor_secret),
                       "curve_server_key": str(hub_public)})
        (tmp / "hub.yaml").write_text(yaml.safe_dump(hub))
        (tmp / "sensor.yaml").write_text(yaml.safe_dump(sensor))
        self.sub = zmq.Context.instance().socket(zmq.SUB)
        secret = read_key(str(sub_secret))
        curve_client(self.sub, secret, read_key(str(hub_public)))
        self.sub.setsockopt(zmq.SUBSCRIBE, b"")
        self.sub.connect(self.pub)
        self.procs = [
            subprocess.Popen([*threatseer, "hub", "-c", str(tmp / "hub.yaml")],
                             stderr=open(tmp / "hub.log", "w")),  # noqa: SIM115
            subprocess.Popen([*threatseer, "sensor", "-c", str(tmp / "sensor.yaml")],
                             stderr=open(tmp / "sensor.log", "w")),  # noqa: SIM115
        ]
        self.tmp = tmp
        self.wait_for(lambda e: e.get("event.action") == "sensor-health", timeout=90)

    def events(self, timeout: float):
        """Yield (receive time, event) until ``timeout`` seconds pass."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.sub.poll(100):
                for p in self.procs:
                    assert p.poll() is None, (self.tmp / "hub.log").read_text()[-2000:] + (
                        self.tmp / "sensor.log").read_text()[-2000:]
                continue
            _topic, events = publish.decode(self.sub.recv_multipart())
            now = time.monotonic()
            for ev in events:
                yield now, ev

    def wait_for(self, predicate, timeout: float = 10.0) -> tuple[float, dict]:
        for when, ev in self.events(timeout):
            if predicate(ev):
                return when, ev
        raise AssertionError("no matching scored event")

    def close(self) -> None:
        stop_processes(*reversed(self.procs))
        self.sub.close(0)


@pytest.fixture
def pipeline(tmp_path, threatseer_cmd):
    p = Pipeline(tmp_path, threatseer_cmd)
    yield p
    p.close()


def engines(ev: dict) -> set[str]:
    return {i["engine"] for i in ev.get("threatseer.indicators", [])}


def test_risky_exec_reaches_a_subscriber_within_a_second_scored_by_all_engines(pipeline):
    # Teach the profile of /usr/bin/bash what it normally does, then step outside it.
    for _ in range(3):
        subprocess.run(["bash", "-c", "true"], check=True)
        time.sleep(1.0)
    port = free_port()
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", port))
        listener.listen(1)
        started = time.monotonic()
        subprocess.run(["bash", "-c", f"echo hi >/dev/tcp/127.0.0.1/{port}"], check=True)
        when, ev = pipeline.wait_for(
            lambda e: e.get("event.action") == "exec"
            and f"/dev/tcp/127.0.0.1/{port}" in e.get("process.command_line", ""))
    assert when - started < 1.0, f"took {when - started:.2f}s from exec to subscriber"
    assert {"static", "dynamic", "profile"} <= engines(ev), ev["threatseer.indicators"]
    rules = {i["rule"] for i in ev["threatseer.indicators"]}
    assert "reverse_shell_dev_tcp" in rules and "risky_process:bash" in rules
    assert ev["event.kind"] == "alert" and ev["event.risk_score"] >= 90
    assert ev["event.risk_score"] == sum(i["score"] for i in ev["threatseer.indicators"])
    assert ev["agent.id"].startswith("s-")


def test_sensitive_read_and_network_callback_each_score(pipeline):
    subprocess.run(["cat", "/etc/shadow"], check=True, stdout=subprocess.DEVNULL)
    _, read = pipeline.wait_for(lambda e: e.get("event.action") == "open"
                                and e.get("file.path") == "/etc/shadow"
                                and e.get("process.name") == "cat")
    assert read["event.risk_score"] > 0
    assert "/etc/shadow" in {i["rule"] for i in read["threatseer.indicators"]}

    port = free_port()
    with socket.socket() as listener:
        listener.bind((C2_ADDRESS, port))
        listener.listen(1)
        subprocess.run(["perl", "-MIO::Socket::INET", "-e",
                        f"IO::Socket::INET->new(PeerAddr=>'{C2_ADDRESS}:{port}') or die"],
                       check=True)
        _, conn = pipeline.wait_for(lambda e: e.get("event.action") == "connect"
                                    and e.get("destination.port") == port)
    assert conn["process.name"] == "perl" and conn["destination.ip"] == C2_ADDRESS
    assert conn["event.risk_score"] >= 100, conn["threatseer.indicators"]
    assert "ioc" in {i["type"] for i in conn["threatseer.indicators"]}


def test_the_demo_sequence_produces_the_expected_alerts(tmp_path, threatseer_cmd):
    proc = subprocess.run([*threatseer_cmd, "demo", "--once", "--workdir", str(tmp_path / "d")],
                          capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for caught in ("risky process calls back [yes]", "callback to a C2 address [yes]",
                   "sensitive file read [yes]", "learned service does something new [yes]"):
        assert caught in proc.stdout
    # Files the demo leaves for a look afterwards: the scored events as JSON lines.
    assert (tmp_path / "d" / "events.jsonl").stat().st_size > 0


def test_the_demo_runs_on_a_fresh_machine(tracefs_unmounted, tmp_path, threatseer_cmd):
    """As `make demo` on a machine where tracefs is not mounted: the sensor mounts it, the
    four alerts are caught, and the demo leaves nothing behind (its files are temporary)."""
    before = set(Path(tempfile.gettempdir()).glob("threatseer-demo-*"))
    proc = subprocess.run([*threatseer_cmd, "demo", "--once"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "4 of 4 alerts caught" in proc.stdout
    assert list(tmp_path.iterdir()) == []
    assert set(Path(tempfile.gettempdir()).glob("threatseer-demo-*")) == before
