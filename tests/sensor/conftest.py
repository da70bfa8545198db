"""Run the real sensor (root, real eBPF) and read what it emits."""

from __future__ import annotations

import json
import os
import queue
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.conftest import stop_processes


def bpf_prog_ids_of(pid: int) -> set[int]:
    """Ids of the BPF programs process ``pid`` holds open (from /proc/PID/fdinfo), so a test
    can check just those, whatever other tests load at the same time."""
    ids = set()
    fdinfo = f"/proc/{pid}/fdinfo"
    for fd in os.listdir(fdinfo):
        try:
            with open(f"{fdinfo}/{fd}") as f:
                for line in f:
                    if line.startswith("prog_id:"):
                        ids.add(int(line.split()[1]))
        except OSError:
            continue
    return ids


def loaded_prog_ids() -> set[int]:
    out = subprocess.run(["bpftool", "prog", "list", "-j"], capture_output=True, text=True)
    return {p["id"] for p in json.loads(out.stdout or "[]")}


class RunningSensor:
    """A ``threatseer sensor --stdout`` process whose JSON lines are collected by a thread."""

    def __init__(self, cmd: list[str], config: dict, tmp_path: Path) -> None:
        self.config_path = tmp_path / "sensor.yaml"
        self.config_path.write_text(yaml.safe_dump(config))
        self.stderr_path = tmp_path / "sensor.stderr"
        self.proc = subprocess.Popen(
            [*cmd, "sensor", "--stdout", "-c", str(self.config_path)],
            stdout=subprocess.PIPE, stderr=open(self.stderr_path, "w"), text=True,  # noqa: SIM115
        )
        self.lines: queue.Queue[dict] = queue.Queue()
        self.events: list[dict] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(json.loads(line))

    def wait_for(self, predicate, timeout: float = 10.0) -> dict:
        """Collect events until one satisfies ``predicate``; return it."""
        for ev in self.events:
            if predicate(ev):
                return ev
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                ev = self.lines.get(timeout=0.1)
            except queue.Empty:
                if self.proc.poll() is not None:
                    raise AssertionError(f"sensor exited: {self.stderr_path.read_text()}") from None
                continue
            self.events.append(ev)
            if predicate(ev):
                return ev
        raise AssertionError(f"no matching event within {timeout}s; stderr: "
                             f"{self.stderr_path.read_text()[-2000:]}")

    def stop(self, timeout: float = 15.0) -> int:
        stop_processes(self.proc, timeout=timeout)
        rc = self.proc.returncode
        time.sleep(0.2)
        while True:
            try:
                self.events.append(self.lines.get_nowait())
            except queue.Empty:
                break
        return rc


def action(name: str):
    return lambda ev: ev.get("event", {}).get("action") == name


@pytest.fixture
def start_sensor(threatseer_cmd, tmp_path) -> Iterator:
    if os.geteuid() != 0:
        pytest.skip("the sensor needs root for eBPF")
    started: list[RunningSensor] = []

    def start(**config) -> RunningSensor:
        config.setdefault("health_interval_s", 1.0)
        config.setdefault("batch_latency_ms", 20)
        s = RunningSensor(threatseer_cmd, config, tmp_path)
        s.wait_for(action("sensor-health"), timeout=60)  # probes attached
        started.append(s)
        return s

    yield start
    for s in started:
        s.stop()
