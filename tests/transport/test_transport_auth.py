"""CURVE and the allow-lists: unknown sensor keys refused and counted, revocation by editing
the allow-list (no restart), subscribers without an allowed key get nothing, and plaintext
only when asked for."""

from __future__ import annotations

import subprocess
import time

import yaml
from transport_helpers import (
    THREATSEER,
    Collector,
    HubProc,
    Keys,
    SensorProc,
    hub_cfg,
    ledger_rows,
    public,
    wait_for,
)


def test_unknown_sensor_key_is_refused_counted_and_logged(tmp_path, procs) -> None:
    keys = Keys(tmp_path / "keys")
    cfg = hub_cfg(tmp_path, keys)
    hub = HubProc(tmp_path, cfg).start()
    procs.append(hub)
    good = SensorProc(tmp_path, cfg["ingest"]["endpoint"], "good", 5_000, keys).start()
    bad = SensorProc(tmp_path, cfg["ingest"]["endpoint"], "intruder", 5_000, keys,
                     secret=keys.stranger[0], drain_timeout=4).start()
    procs += [good, bad]
    assert good.wait(30) == 0
    assert bad.wait(30) == 3  # never acknowledged: its batches stay in its spool
    auth = wait_for(lambda: hub.status()["transport"]["auth"]["ingest"]["refused"] and
                    hub.status()["transport"]["auth"], 10, "the refusal in status.json")
    assert auth["ingest"]["refused_peers"].get("127.0.0.1", 0) >= 1
    assert auth["ingest"]["accepted"] >= 1
    assert ledger_rows(cfg["state_dir"], "intruder") == []
    assert sum(n for _e, _s, n in ledger_rows(cfg["state_dir"], "good")) == 5_000
    stranger = public(keys.stranger[1]).decode()
    refusals = [ln for ln in hub.log_text().splitlines() if "refused 127.0.0.1" in ln]
    assert refusals and stranger in refusals[0]
    assert len(refusals) <= 3  # rate-limited: the sensor retries every few hundred ms
    # the refused sensor says so too, once, and keeps its batches
    said = [ln for ln in bad.log.read_text().splitlines() if "refused the connection" in ln]
    assert len(said) == 1 and "(authentication)" in said[0]
    assert hub.stop() == 0


def test_revoked_key_stops_working_after_the_allow_list_reload(tmp_path, procs) -> None:
    keys = Keys(tmp_path / "keys")
    cfg = hub_cfg(tmp_path, keys)
    hub = HubProc(tmp_path, cfg).start()
    procs.append(hub)
    sensor = SensorProc(tmp_path, cfg["ingest"]["endpoint"], "synth-v", 40_000, keys,
                        rate=4_000, batch=200).start()
    procs.append(sensor)
    wait_for(lambda: len(ledger_rows(cfg["state_dir"], "synth-v")) >= 5, 20, "first batches")
    original = keys.allow.read_text()
    keys.allow.write_text("# everyone revoked\n")
    time.sleep(2.0)  # the allow-list is checked every second
    frozen = len(ledger_rows(cfg["state_dir"], "synth-v"))
    time.sleep(2.0)
    assert len(ledger_rows(cfg["state_dir"], "synth-v")) == frozen  # nothing more gets in
    assert frozen < 200
    # status.json is rewritten every 2 s
    wait_for(lambda: (lambda st: st["revoked_messages"] + st["refused"] >= 1)(
        hub.status()["transport"]["auth"]["ingest"]), 10, "the revocation in status.json")
    assert "no longer in the allow-list" in hub.log_text()
    # put it back: the sensor's spool kept everything, the stream completes, no restart
    keys.allow.write_text(original)
    assert sensor.wait(60) == 0, sensor.log.read_text()
    rows = ledger_rows(cfg["state_dir"], "synth-v")
    assert [s for _e, s, _n in rows] == list(range(1, 201))
    assert hub.starts == 1 and hub.stop() == 0


def test_a_subscriber_without_an_allowed_key_reads_nothing(tmp_path, procs) -> None:
    keys = Keys(tmp_path / "keys")
    cfg = hub_cfg(tmp_path, keys)
    hub = HubProc(tmp_path, cfg).start()
    procs.append(hub)
    pub = cfg["publish"]["endpoint"]
    allowed = Collector(pub, keys.subscriber[0], keys.hub[1])
    plain = Collector(pub)  # no CURVE at all
    stranger = Collector(pub, keys.stranger[0], keys.hub[1])  # CURVE, key not allowed
    sensor_key = Collector(pub, keys.sensor[0], keys.hub[1])  # a sensor's key: not a reader
    tap = subprocess.Popen([*THREATSEER, "tap", "--endpoint", pub, "--json", "--count", "5",
                            "--server-key", str(keys.hub[1]), "--key", str(keys.subscriber[0])],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(1.0)
        sensor = SensorProc(tmp_path, cfg["ingest"]["endpoint"], "synth-p", 3_000, keys).start()
        procs.append(sensor)
        assert sensor.wait(30) == 0
        wait_for(lambda: len(allowed.ids) >= 3_000, 10, "the allowed subscriber's events")
        out, err = tap.communicate(timeout=10)
        time.sleep(0.5)
    finally:
        if tap.poll() is None:
            tap.kill()
        for c in (allowed, plain, stranger, sensor_key):
            c.close()
    assert tap.returncode == 0, err
    assert len([ln for ln in out.splitlines() if ln.startswith("{")]) == 5
    assert plain.ids == [] and stranger.ids == [] and sensor_key.ids == []
    # status.json is rewritten every 2 s
    wait_for(lambda: (lambda st: st["refused"] >= 2 and st["accepted"] >= 2)(
        hub.status()["transport"]["auth"]["publish"]), 10, "the handshakes in status.json")
    assert hub.stop() == 0


def test_revoked_subscriber_is_cut_off_after_the_reload(tmp_path, procs) -> None:
    keys = Keys(tmp_path / "keys")
    cfg = hub_cfg(tmp_path, keys)
    hub = HubProc(tmp_path, cfg).start()
    procs.append(hub)
    sub = Collector(cfg["publish"]["endpoint"], keys.subscriber[0], keys.hub[1])
    sensor = SensorProc(tmp_path, cfg["ingest"]["endpoint"], "synth-s", 30_000, keys,
                        rate=3_000, batch=100).start()
    procs.append(sensor)
    try:
        wait_for(lambda: len(sub.ids) >= 500, 20, "events before revocation")
        keys.sub_allow.write_text("")
        time.sleep(2.0)
        seen = len(sub.ids)
        time.sleep(2.0)
        assert len(sub.ids) == seen
        assert seen < 30_000
    finally:
        sub.close()
    assert sensor.wait(30) == 0
    assert hub.stop() == 0


def test_keys_are_required_unless_plaintext_is_explicit(tmp_path) -> None:
    cfg = hub_cfg(tmp_path, None)
    del cfg["plaintext"]
    path = tmp_path / "hub.yaml"
    path.write_text(yaml.safe_dump(cfg))
    r = subprocess.run([*THREATSEER, "hub", "-c", str(path)], capture_output=True, text=True,
                       timeout=30)
    assert r.returncode != 0 and "curve_secret_key_file: required" in r.stderr
    scfg = tmp_path / "sensor.yaml"
    scfg.write_text(yaml.safe_dump({"hub": cfg["ingest"]["endpoint"],
                                    "state_dir": str(tmp_path / "s")}))
    r = subprocess.run([*THREATSEER, "sensor", "-c", str(scfg)], capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 2 and "curve_secret_key_file: required" in r.stderr
    # and with plaintext: true the hub starts, saying so
    cfg["plaintext"] = True
    hub = HubProc(tmp_path, cfg, name="plain").start()
    try:
        assert "PLAINTEXT" in hub.log_text()
    finally:
        assert hub.stop() == 0
