"""The sensor's /metrics endpoint (metrics_listen), scraped from the real sensor on the real
kernel and parsed by Prometheus' own parser."""

from __future__ import annotations

import subprocess
import time
import urllib.error
import urllib.request
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import free_port
from threatseer.sensor.config import SensorConfig
from threatseer.sensor.metrics import exposition


def scrape(listen: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://{listen}/metrics", timeout=10) as resp:
        assert resp.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
        body = resp.read().decode()
    return {f.name: f for f in text_string_to_metric_families(body)}


def sample(families: dict[str, Any], name: str, **labels: str) -> float:
    for fam in families.values():
        for s in fam.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    raise AssertionError(f"no sample {name} {labels}")


def test_off_by_default() -> None:
    assert SensorConfig().metrics_listen == ""


def test_the_sensor_serves_its_counters(start_sensor: Any) -> None:
    listen = f"127.0.0.1:{free_port()}"
    sensor = start_sensor(metrics_listen=listen)
    first = scrape(listen)
    for _ in range(20):
        subprocess.run(["/bin/true"], check=True)
    time.sleep(1.5)  # the loop refreshes the snapshot once a second
    then = scrape(listen)
    read = "threatseer_sensor_events_read_total"
    assert sample(then, read) >= sample(first, read) + 20
    assert sample(then, "threatseer_sensor_kernel_records_total") >= sample(then, read)
    assert first["threatseer_sensor_kernel_records_filtered"].type == "counter"
    filters = {s.labels["filter"] for s in then["threatseer_sensor_kernel_records_filtered"]
               .samples}
    assert {"path", "self", "change", "privilege"} <= filters
    assert sample(then, "threatseer_sensor_kernel_records_lost_total") == 0
    assert sample(then, "threatseer_sensor_processes") > 10
    assert sample(then, "threatseer_sensor_info", version="0.1.0") == 1
    assert 1 << 20 < sample(then, "process_resident_memory_bytes") <= 60 << 20
    assert sample(then, "process_cpu_seconds_total") > 0
    assert sample(then, "threatseer_sensor_metrics_scrapes_total") == 2
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(f"http://{listen}/nothing", timeout=10)
    assert err.value.code == 404
    assert sensor.stop() == 0


def test_a_port_in_use_is_one_line_and_exit_2(threatseer_cmd: list[str], tmp_path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        (tmp_path / "s.yaml").write_text(f"metrics_listen: 127.0.0.1:{port}\n")
        proc = subprocess.run([*threatseer_cmd, "sensor", "--stdout", "-c",
                               str(tmp_path / "s.yaml")], capture_output=True, text=True,
                              timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == (
        f"threatseer sensor: metrics_listen 127.0.0.1:{port}: Address already in use")


def test_the_exposition_escapes_what_it_must() -> None:
    text = exposition([("m_total", "counter", 'help with \\ and\nnewline', (), 3.0),
                       ("g", "gauge", "", (("l", 'a"b\\c\nd'),), 0.5)])
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert families["m"].documentation == "help with \\ and\nnewline"
    assert families["g"].samples[0].labels == {"l": 'a"b\\c\nd'}
    assert families["g"].samples[0].value == 0.5
