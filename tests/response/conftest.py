"""A real hub (in this process) and a real sensor (root, eBPF) with a bundle whose rules may
kill, for the response tests. Every rule matches only executables under this module's own
temporary directory, so nothing else on the shared machine can be touched."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
import zmq

if os.geteuid() != 0 or not os.path.exists("/sys/kernel/btf/vmlinux"):
    pytest.skip("the response tests run the real sensor: root and BTF", allow_module_level=True)

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "hub"))

from hub_helpers import endpoint  # noqa: E402

from tests.conftest import stop_processes  # noqa: E402
from threatseer.common import ecs  # noqa: E402
from threatseer.hub import publish  # noqa: E402

Event = dict[str, Any]


def write_bundle(path: Path, base: Path) -> Path:
    """A bundle of kill rules scoped to ``base`` (this run's directory)."""
    (path / "rules").mkdir(parents=True)
    (path / "manifest.yaml").write_text(yaml.safe_dump({"name": "response-test",
                                                        "version": "1"}))
    rules = [
        {"rule": "test_kill", "description": "a test program that must die",
         "condition": f'event.action = exec and process.executable startswith "{base}/kill/"',
         "score": 90, "action": "kill"},
        {"rule": "test_dry", "description": "a test program a dry run reports",
         "condition": f'event.action = exec and process.executable startswith "{base}/dry/"',
         "score": 90, "action": "kill"},
        {"rule": "test_not_allowed", "description": "action kill, not in kill_rules",
         "condition": f'event.action = exec and process.executable startswith "{base}/alert/"',
         "score": 90, "action": "kill"},
    ]
    (path / "rules" / "kill.yaml").write_text(yaml.safe_dump({"rules": rules}))
    (path / "enforce.yaml").write_text(yaml.safe_dump({"exec": [
        {"rule": "test_deny_exec", "description": "execs under this test's deny/ directory",
         "prefixes": [f"{base}/deny/"]},
        {"rule": "test_deny_deleted", "description": "deleted files run from del/",
         "deleted": True, "prefixes": [f"{base}/del/"]},
    ]}))
    return path


class EventStream(threading.Thread):
    """Scored events gathered by a thread (``fetch``: the next ones, waiting up to ~0.1 s),
    kept for the tests to wait on: the hub's PUB stream here, the cluster's events topic in
    tests/cluster/test_cluster_kill.py."""

    source = "the hub"

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.events: list[Event] = []
        self.lock = threading.Lock()
        self.stopped = False

    def fetch(self) -> list[Event]:
        raise NotImplementedError

    def run(self) -> None:
        while not self.stopped:
            got = self.fetch()
            if got:
                with self.lock:
                    self.events.extend(got)

    def wait(self, pred: Callable[[Event], bool], timeout: float = 15.0) -> Event:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                for ev in self.events:
                    if pred(ev):
                        return ev
            time.sleep(0.02)
        raise AssertionError(f"no such event from {self.source}")

    def close(self) -> None:
        self.stopped = True
        self.join(5)


class Events(EventStream):
    """Everything the hub publishes."""

    def __init__(self, ep: str) -> None:
        super().__init__()
        self.sock = zmq.Context.instance().socket(zmq.SUB)
        self.sock.setsockopt(zmq.SUBSCRIBE, b"")
        self.sock.setsockopt(zmq.RCVHWM, 0)
        self.sock.connect(ep)

    def fetch(self) -> list[Event]:
        if self.sock.poll(100):
            return publish.decode(self.sock.recv_multipart())[1]
        return []

    def close(self) -> None:
        super().close()
        self.sock.close(0)


def program(base: Path, where: str, name: str = "sleeper", src: str = "/bin/sleep") -> Path:
    """A copy of ``src`` at ``base/where/<unique>/name`` (the rules match by directory)."""
    d = base / where / uuid.uuid4().hex[:8]
    d.mkdir(parents=True)
    exe = d / name
    shutil.copyfile(src, exe)
    exe.chmod(0o755)
    return exe


def run_until_killed(exe: Path, timeout: float = 15.0) -> int:
    """Start ``exe 30`` and wait for its SIGKILL (``timeout`` s at most); its pid. A program
    that was not killed fails the test and is killed here."""
    child = subprocess.Popen([str(exe), "30"])
    try:
        assert child.wait(timeout) == -signal.SIGKILL, "not killed"
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    return child.pid


def kill_event_for(alert: Event) -> Callable[[Event], bool]:
    """Matches the sensor's kill report for ``alert`` (its ``event.id``)."""
    return lambda e: (e.get("event.action") == ecs.KILL
                      and e.get("threatseer.response.event_id") == alert["event.id"])


def denied_exec_killed_in_kernel(env: Any) -> tuple[Path, Event]:
    """Run a copy of touch under ``env``'s denied prefix (a Stack or the cluster test's
    Cluster: ``program``, ``base``, ``events``) and check the kernel stopped it before its
    first instruction: SIGKILL, no marker file, an exec event with the kernel's verdict and
    nothing left for the hub or scorer to do, and a kill report from the kernel. Returns the
    marker's path and the report."""
    exe = env.program("deny", name="touch", src="/usr/bin/touch")
    marker = env.base / f"marker-{uuid.uuid4().hex[:8]}"
    proc = subprocess.run([str(exe), str(marker)], timeout=10)
    assert proc.returncode == -9
    assert not marker.exists(), "the program ran"
    ex = env.events.wait(lambda e: e.get("event.action") == "exec"
                         and e.get("process.executable") == str(exe))
    assert ex["threatseer.enforce.verdict"] == "killed"
    assert ex["threatseer.enforce.rule"] == "test_deny_exec"
    assert "threatseer.response.status" not in ex  # the hub or scorer had nothing left to do
    report = env.events.wait(kill_event_for(ex))
    assert report["threatseer.response.source"] == "kernel"
    assert report["event.outcome"] == "success"
    return marker, report


class Stack:
    def __init__(self, base: Path, events: Events, hub: Any, sensor: subprocess.Popen,
                 sensor_log: Path) -> None:
        self.base, self.events, self.hub = base, events, hub
        self.sensor, self.sensor_log = sensor, sensor_log

    def program(self, where: str, name: str = "sleeper", src: str = "/bin/sleep") -> Path:
        return program(self.base, where, name, src)

    run_until_killed = staticmethod(run_until_killed)


@pytest.fixture(scope="module")
def stack(tmp_path_factory, threatseer_cmd) -> Iterator[Stack]:  # type: ignore[no-untyped-def]
    yield from _stack(tmp_path_factory, threatseer_cmd)


@pytest.fixture(scope="module")
def hub_only_stack(tmp_path_factory, threatseer_cmd) -> Iterator[Stack]:  # type: ignore[no-untyped-def]
    """A sensor whose kernel does not enforce (as where the kernel refuses the program): the
    hub kills denied execs itself."""
    yield from _stack(tmp_path_factory, threatseer_cmd, enforce_in_kernel=False)


def _stack(tmp_path_factory, threatseer_cmd, **sensor_cfg: Any) -> Iterator[Stack]:  # type: ignore[no-untyped-def]
    from threatseer.hub.config import HubConfig
    from threatseer.hub.daemon import Hub
    from threatseer.hub.rules.bundle import load_bundle

    tmp = tmp_path_factory.mktemp("response")
    base = Path(tempfile.mkdtemp(prefix="ts-response-"))
    cfg = HubConfig()
    cfg.ingest.endpoint, cfg.publish.endpoint = endpoint(), endpoint()
    cfg.metrics.listen = ""
    cfg.state_dir = str(tmp / "hub")
    cfg.plaintext = True
    cfg.publish.start_grace_s = 0.0
    cfg.actions.toss_below = 1  # only what a rule scored: the kills' alerts and reports
    cfg.response.kill_rules = {"test_kill": "kill", "test_dry": "dry-run",
                               "test_deny_exec": "kill", "test_deny_deleted": "kill"}
    hub = Hub(cfg, bundle=load_bundle(write_bundle(tmp / "bundle", base)))
    hub.start()
    events = Events(cfg.publish.endpoint)
    events.start()
    sensor_log = tmp / "sensor.log"
    (tmp / "sensor.yaml").write_text(yaml.safe_dump({
        "hub": cfg.ingest.endpoint, "plaintext": True, "state_dir": str(tmp / "sensor"),
        "health_interval_s": 1.0, "sensitive_paths": ["/etc/shadow"],
        "watched_paths": [], "log_level": "info", **sensor_cfg}))
    sensor = subprocess.Popen([*threatseer_cmd, "sensor", "-c", str(tmp / "sensor.yaml")],
                              stderr=open(sensor_log, "w"))  # noqa: SIM115
    try:
        # up once its health events reach the hub (they score 0 and are tossed: wait on the
        # hub's counters instead)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not hub.ingest.sensors:
            assert sensor.poll() is None, sensor_log.read_text()
            time.sleep(0.1)
        assert hub.ingest.sensors, "the sensor never reached the hub"
        deadline = time.monotonic() + 10
        while "exec policy" not in sensor_log.read_text() and time.monotonic() < deadline:
            time.sleep(0.1)
        yield Stack(base, events, hub, sensor, sensor_log)
    finally:
        stop_processes(sensor)
        events.close()
        hub.stop()
        shutil.rmtree(base, ignore_errors=True)
