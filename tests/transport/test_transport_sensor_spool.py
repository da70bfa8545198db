"""The sensor side: restart mid-stream (kill -9, resume from the spool), hub down for a while
(everything spools, then drains), and the spool bound (oldest dropped, counted, reported)."""

from __future__ import annotations

import collections
import sqlite3
import time

from transport_helpers import (
    Collector,
    HubProc,
    Keys,
    SensorProc,
    hub_cfg,
    ledger_rows,
    wait_for,
)


def spooled(tmp_path, sid: str) -> int:
    db = sqlite3.connect(tmp_path / f"sensor-{sid}" / "spool.db")
    try:
        return db.execute("SELECT count(*) FROM batches").fetchone()[0]
    except sqlite3.OperationalError:
        return 0
    finally:
        db.close()


def test_sensor_killed_mid_stream_resumes_nothing_lost_or_duplicated(tmp_path, procs) -> None:
    total, batch = 60_000, 500
    cfg = hub_cfg(tmp_path, None)
    hub = HubProc(tmp_path, cfg).start()
    procs.append(hub)
    sub = Collector(cfg["publish"]["endpoint"])
    sensor = SensorProc(tmp_path, cfg["ingest"]["endpoint"], "synth-r", total, None,
                        batch=batch, rate=15_000, resend=1.0)
    procs.append(sensor)
    try:
        sensor.start()
        wait_for(lambda: len(ledger_rows(cfg["state_dir"], "synth-r")) >= 20, 30,
                 "the first batches")
        sensor.kill()  # kill -9: whatever was spooled and not acknowledged is resent
        done_before = len(ledger_rows(cfg["state_dir"], "synth-r"))
        assert done_before < total // batch
        sensor.start()
        assert sensor.wait(60) == 0, sensor.log.read_text()
        time.sleep(0.5)
    finally:
        assert hub.stop() == 0
        sub.close()
    rows = ledger_rows(cfg["state_dir"], "synth-r")
    assert len({e for e, _s, _n in rows}) == 1  # the same epoch: it resumed its spool
    assert [s for _e, s, _n in rows] == list(range(1, total // batch + 1))
    got = collections.Counter(i for i in sub.ids if i.startswith("synth-r:"))
    assert set(got) == {f"synth-r:{i}" for i in range(total)}
    assert max(got.values()) == 1  # nothing published twice either: the hub never crashed
    starts = [ln for ln in sensor.log.read_text().splitlines() if ln.startswith("start at")]
    assert len(starts) == 2 and starts[0].startswith("start at event 0 ")
    assert not starts[1].startswith("start at event 0 ")  # resumed where its spool was


def test_hub_down_the_sensor_spools_then_drains_everything(tmp_path, procs) -> None:
    total, batch = 30_000, 500
    keys = Keys(tmp_path / "keys")
    cfg = hub_cfg(tmp_path, keys)
    hub = HubProc(tmp_path, cfg)
    procs.append(hub)
    sensor = SensorProc(tmp_path, cfg["ingest"]["endpoint"], "synth-d", total, keys,
                        batch=batch, rate=20_000, resend=1.0).start()
    procs.append(sensor)
    # no hub yet: the whole stream lands in the spool, the sensor keeps generating
    wait_for(lambda: "generated up to 30000" in sensor.log.read_text(), 30, "the stream")
    assert spooled(tmp_path, "synth-d") == total // batch
    hub.start()
    assert sensor.wait(60) == 0, sensor.log.read_text()
    assert hub.stop() == 0
    rows = ledger_rows(cfg["state_dir"], "synth-d")
    assert [s for _e, s, _n in rows] == list(range(1, total // batch + 1))
    assert spooled(tmp_path, "synth-d") == 0


def test_spool_bound_drops_oldest_counted_and_the_hub_reports_the_gap(tmp_path, procs) -> None:
    # 0.1 MiB of spool; each batch of 500 events is ~7 KB as LZ4 (~120 KB plain): most of
    # 100 batches must go
    total, batch = 50_000, 500
    cfg = hub_cfg(tmp_path, None)
    hub = HubProc(tmp_path, cfg)
    procs.append(hub)
    sensor = SensorProc(tmp_path, cfg["ingest"]["endpoint"], "synth-b", total, None,
                        batch=batch, rate=50_000, resend=1.0, spool_mib=0.1).start()
    procs.append(sensor)
    wait_for(lambda: "generated up to 50000" in sensor.log.read_text(), 30, "the stream")
    kept = spooled(tmp_path, "synth-b")
    assert 0 < kept < total // batch
    hub.start()
    sub = Collector(cfg["publish"]["endpoint"])
    try:
        assert sensor.wait(60) == 0, sensor.log.read_text()
        time.sleep(0.5)
    finally:
        assert hub.stop() == 0
        sub.close()
    last = sensor.log.read_text().splitlines()[-1]
    dropped = int(last.split("dropped=")[1])
    assert dropped == (total // batch - kept) * batch  # counted by the sensor
    rows = ledger_rows(cfg["state_dir"], "synth-b")
    first_kept = total // batch - kept + 1
    assert [s for _e, s, _n in rows] == list(range(first_kept, total // batch + 1))
    # ... and the hub reports the hole it can never fill: one loss event with its size
    losses = [ev for ev in sub.events if ev.get("event.action") == "sensor-loss"]
    assert len(losses) == 1, losses
    assert losses[0]["threatseer.loss.batches"] == first_kept - 1
    assert losses[0]["threatseer.loss.events"] == dropped
    assert losses[0]["agent.id"] == "synth-b"
    assert "can no longer be resent" in hub.log_text()
