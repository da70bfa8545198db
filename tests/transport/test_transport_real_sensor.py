"""The real ``threatseer sensor`` (eBPF) to a CURVE hub: a command run here comes out of the
hub's PUB stream to an allowed subscriber; a restarted sensor keeps its epoch (spool) and its
sequence numbers continue."""

from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid

import pytest
import yaml
from transport_helpers import THREATSEER, Collector, HubProc, Keys, hub_cfg, ledger_rows, wait_for


def test_real_sensor_over_curve_and_a_restart_keeps_its_epoch(tmp_path, procs) -> None:
    if os.geteuid() != 0:
        pytest.skip("the sensor needs root for eBPF")
    keys = Keys(tmp_path / "keys")
    cfg = hub_cfg(tmp_path, keys)
    hub = HubProc(tmp_path, cfg).start()
    procs.append(hub)
    sub = Collector(cfg["publish"]["endpoint"], keys.subscriber[0], keys.hub[1])
    scfg = tmp_path / "sensor.yaml"
    scfg.write_text(yaml.safe_dump({
        "hub": cfg["ingest"]["endpoint"], "sensor_id": "real-curve",
        "state_dir": str(tmp_path / "sensor"), "batch_latency_ms": 20,
        "health_interval_s": 1.0, "curve_secret_key_file": str(keys.sensor[0]),
        "curve_public_key_file": str(keys.sensor[1]), "curve_server_key": str(keys.hub[1])}))
    log = open(tmp_path / "sensor.log", "w")  # noqa: SIM115

    def run_sensor() -> subprocess.Popen:
        p = subprocess.Popen([*THREATSEER, "sensor", "-c", str(scfg)],
                             stdout=subprocess.DEVNULL, stderr=log)
        procs.append(p)
        return p

    try:
        for round_ in range(2):
            sensor = run_sensor()
            marker = f"curve-{round_}-{uuid.uuid4().hex[:8]}"

            def seen(marker: str = marker) -> bool:
                subprocess.run(["/bin/echo", marker], stdout=subprocess.DEVNULL, check=True)
                time.sleep(0.3)
                return any(marker in (ev.get("process.args") or []) for ev in sub.events)

            wait_for(seen, 60, f"the marker exec of round {round_} on the PUB stream")
            sensor.send_signal(signal.SIGTERM)
            assert sensor.wait(30) == 0, (tmp_path / "sensor.log").read_text()
    finally:
        sub.close()
        log.close()
    assert hub.stop() == 0
    rows = ledger_rows(cfg["state_dir"], "real-curve")
    assert len({epoch for epoch, _s, _n in rows}) == 1  # the second run resumed the spool
    assert [s for _e, s, _n in rows] == list(range(1, len(rows) + 1))
    assert "PLAINTEXT" not in hub.log_text()
