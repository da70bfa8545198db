"""Item 9: a sensor whose disk is full keeps running, bounds what it holds, and says what it
lost once it can.

The real ``threatseer sensor`` (eBPF) with its state on a 8 MiB tmpfs this test mounts (and
always unmounts): the disk is filled while the hub is away, a load generator opens a watched
file tens of thousands of times, the disk is freed and the hub comes back. The old sensor died
on its first spool insert, and systemd restarted it into the same crash.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
import uuid
from pathlib import Path

import pytest
import yaml
from transport_helpers import THREATSEER, Collector, HubProc, hub_cfg, wait_for

from threatseer.common import ecs

ROOT = Path(__file__).resolve().parents[2]


def _fill(path: Path) -> None:
    """Write zeros to ``path`` until the file system says it is full."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for size in (64 << 10, 512):
            with contextlib.suppress(OSError):
                while True:
                    os.write(fd, b"\0" * size)
    finally:
        os.close(fd)


@pytest.fixture
def small_disk(tmp_path: Path):  # type: ignore[no-untyped-def]
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mnt = tmp_path / "disk"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m,mode=0700", "ts-test-disk",
                    str(mnt)], check=True)
    try:
        yield mnt
    finally:
        for _ in range(50):
            if subprocess.run(["umount", str(mnt)], capture_output=True).returncode == 0:
                break
            time.sleep(0.1)
        else:
            subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_a_sensor_on_a_full_disk_goes_on_and_reports_its_loss(tmp_path, small_disk, procs):
    loadgen = tmp_path / "loadgen"
    subprocess.run(["gcc", "-O2", "-o", str(loadgen), str(ROOT / "bench" / "loadgen.c")],
                   check=True)
    watched = tmp_path / "watched"
    watched.mkdir()
    (watched / "f").write_text("x")
    cfg = hub_cfg(tmp_path, None)
    hub = HubProc(tmp_path, cfg).start()
    procs.append(hub)
    sub = Collector(cfg["publish"]["endpoint"])
    scfg = tmp_path / "sensor.yaml"
    scfg.write_text(yaml.safe_dump({
        "hub": cfg["ingest"]["endpoint"], "sensor_id": "full-disk", "plaintext": True,
        "state_dir": str(small_disk / "sensor"), "batch_latency_ms": 50,
        "health_interval_s": 1.0, "sensitive_paths": [f"{watched}/"],
        "spool_memory_mib": 1}))
    log = tmp_path / "sensor.log"
    with open(log, "w") as err:
        sensor = subprocess.Popen([*THREATSEER, "sensor", "-c", str(scfg)],
                                  stdout=subprocess.DEVNULL, stderr=err)
    procs.append(sensor)

    def marker_seen() -> bool:
        marker = f"m-{uuid.uuid4().hex[:8]}"
        subprocess.run(["/bin/echo", marker], stdout=subprocess.DEVNULL, check=True)
        time.sleep(0.3)
        assert sensor.poll() is None, log.read_text()
        return any(marker in (ev.get("process.args") or []) for ev in sub.events)

    try:
        wait_for(marker_seen, 60, "the sensor's events at the hub")
        hub.stop()  # nothing is acknowledged from here on
        _fill(small_disk / "filler")
        # ~1.5 s of opens: far more than 1 MiB of compressed batches
        subprocess.run([str(loadgen), "open", "1.5", "0", str(watched / "f")], check=True,
                       capture_output=True)
        wait_for(lambda: "keeping batches in memory" in log.read_text(), 20,
                 "the sensor to fall back to memory")
        time.sleep(2.5)  # health intervals pass on a full disk
        assert sensor.poll() is None, log.read_text()[-3000:]

        (small_disk / "filler").unlink()
        hub.start()
        wait_for(marker_seen, 60, "the sensor's events after the disk was freed")
        losses = wait_for(lambda: [e for e in sub.events
                                   if e.get("event.action") == ecs.SENSOR_LOSS
                                   and e.get("threatseer.loss.counter") == "send_dropped"],
                          30, "the sensor's loss event")
        assert sum(e["threatseer.loss.events"] for e in losses) > 1000
        assert "the disk takes writes again" in log.read_text()
        assert sensor.poll() is None
    finally:
        sub.close()
        if sensor.poll() is None:
            sensor.send_signal(signal.SIGTERM)
            sensor.wait(30)
    assert sensor.returncode == 0, log.read_text()[-3000:]
    assert hub.stop() == 0
