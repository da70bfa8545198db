"""A sensor host installs only the sensor: ``pip install threatseer`` (no extra) from the same
wheelhouse an operator serves, with none of the hub's packages, runs ``threatseer sensor``
against the real kernel, and its hub commands say which extra to install."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
import zipfile
from pathlib import Path

import pytest
import yaml

from tests.conftest import free_port, stop_processes

# Distributions only the hub needs (the `hub` extra in pyproject.toml).
HUB_ONLY = {"elasticsearch", "confluent-kafka", "redis", "pysigma", "pynacl", "pyahocorasick",
            "sqlite-utils", "msgpack", "prometheus-client"}


@pytest.fixture(scope="module")
def sensor_venv(wheelhouse: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    venv = tmp_path_factory.mktemp("sensor-only") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    proc = subprocess.run(
        [str(venv / "bin/python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
         "--no-index", "--find-links", str(wheelhouse), "threatseer"],
        capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return venv


def test_no_hub_package_is_installed(sensor_venv: Path) -> None:
    out = subprocess.run([str(sensor_venv / "bin/python"), "-m", "pip", "list", "--format",
                          "json", "--disable-pip-version-check"],
                         capture_output=True, text=True, check=True).stdout
    installed = {d["name"].lower() for d in json.loads(out)}
    assert "threatseer" in installed
    assert installed & HUB_ONLY == set()
    extras = subprocess.run([str(sensor_venv / "bin/python"), "-m", "threatseer.cli.extras",
                             "hub"], capture_output=True, text=True)
    assert extras.returncode == 1 and "elasticsearch" in extras.stdout


def test_hub_commands_name_the_extra_in_one_line(sensor_venv: Path, tmp_path: Path) -> None:
    exe = str(sensor_venv / "bin/threatseer")
    for args in (["hub", "--print-config"], ["rules", "validate", "x"], ["status"],
                 ["keys", "gen", "--type", "signing", "-o", str(tmp_path / "s.key")]):
        proc = subprocess.run([exe, *args], capture_output=True, text=True, timeout=60)
        assert proc.returncode != 0, args
        assert "pip install 'threatseer[hub]'" in proc.stderr, (args, proc.stderr)
        assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    # what a sensor host needs works: the field listing, its own CURVE key pair
    fields = subprocess.run([exe, "fields", "process.pid"], capture_output=True, text=True,
                            timeout=60)
    assert fields.returncode == 0 and "process.pid" in fields.stdout, fields.stderr
    proc = subprocess.run([exe, "keys", "gen", "--type", "curve", "-o", str(tmp_path / "c.key")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "c.key").stat().st_mode & 0o777 == 0o600


def test_the_sensor_runs_on_the_kernel(sensor_venv: Path, tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("the sensor needs root for eBPF")
    config = tmp_path / "sensor.yaml"
    listen = f"127.0.0.1:{free_port()}"
    config.write_text(yaml.safe_dump({"health_interval_s": 1.0, "batch_latency_ms": 20,
                                      "state_dir": str(tmp_path / "state"),
                                      "metrics_listen": listen}))
    proc = subprocess.Popen([str(sensor_venv / "bin/threatseer"), "sensor", "--stdout", "-c",
                             str(config)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    marker = f"sensor-only-{uuid.uuid4().hex[:8]}"
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 90
        ran = False
        for line in proc.stdout:
            ev = json.loads(line)
            action = ev.get("event", {}).get("action")
            if action == "sensor-health" and not ran:
                subprocess.run(["/bin/echo", marker], check=True, stdout=subprocess.DEVNULL)
                ran = True
            if action == "exec" and marker in ev["process"]["args"]:
                break
            assert time.monotonic() < deadline, "no exec event from the sensor-only install"
        # /metrics without prometheus-client installed (sensor/metrics.py says why). Its
        # stdout is drained meanwhile: a sensor blocked on a full pipe cannot stop.
        threading.Thread(target=proc.stdout.read, daemon=True).start()
        body = urllib.request.urlopen(f"http://{listen}/metrics", timeout=10).read().decode()
        assert "\nthreatseer_sensor_events_read_total " in body
        assert "# TYPE process_resident_memory_bytes gauge" in body
    finally:
        stop_processes(proc, timeout=30)
    assert proc.returncode == 0, proc.stderr.read()[-2000:] if proc.stderr else ""


def test_the_wheel_carries_the_bpf_object_and_the_default_bundle(wheelhouse: Path) -> None:
    """What an installed threatseer needs beside its code: the BPF object the sensor loads and
    the default rule bundle the demo and the hub start from."""
    (wheel,) = wheelhouse.glob("threatseer-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "threatseer/native/threatseer.bpf.o" in names
    assert "threatseer/hub/rules/default_bundle/manifest.yaml" in names
    assert any(n.startswith("threatseer/hub/rules/default_bundle/sigma/") for n in names)
    # the console's page: served from the package, nothing fetched or built at run time
    for name in ("index.html", "app.js", "app.css", "favicon.svg"):
        assert f"threatseer/hub/console/static/{name}" in names
