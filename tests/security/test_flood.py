"""Issue 15's flood item: a hostile sensor flooding malformed batches does not slow a
well-behaved sensor's acks, and what it sends is still counted.

A real ``threatseer hub`` (CURVE), two allowed keys. The honest sensor sends a batch of 20
events every 20 ms and times each ack, first alone, then while the hostile key (its own
process) sends malformed batches as fast as the hub takes them
(``security_helpers.malformed_flood``). Before the penalty box (hub/penalty.py) each of them
was decompressed and decoded on the pipeline thread, and the honest median ack went from
~1.5 ms to ~9 ms on this 2-core host; now the key is boxed after ``penalty_strikes`` of them
and the rest cost a dictionary lookup each.
"""

from __future__ import annotations

import multiprocessing as mp
import statistics
import time

from security_helpers import WireSensor, exec_event, file_output, malformed_flood, read_events
from transport_helpers import HubProc, Keys, hub_cfg, keypair, public, wait_for

INTERVAL_S = 0.02


def honest_waits(sensor: WireSensor, seconds: float) -> list[float]:
    """Send a batch every INTERVAL_S for ``seconds`` (one in flight); each ack's wait."""
    waits = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        t0 = time.monotonic()
        seq = sensor.send([exec_event("honest", sensor.seq * 20 + k) for k in range(20)])
        assert sensor.wait_ack(seq, 5), f"honest batch {seq} not acknowledged within 5 s"
        waits.append(time.monotonic() - t0)
        time.sleep(max(0.0, t0 + INTERVAL_S - time.monotonic()))
    return waits


def test_a_malformed_flood_does_not_slow_another_sensors_acks(tmp_path, procs) -> None:
    keys = Keys(tmp_path / "keys")
    hostile = keypair(tmp_path / "keys", "hostile")
    keys.allow.write_text(keys.allow.read_text() + f"{public(hostile[1]).decode()}  # x\n")
    out = tmp_path / "out" / "events.jsonl"
    cfg = hub_cfg(tmp_path, keys, log_level="warning", outputs=[file_output(out)])
    cfg["ingest"]["log_interval_s"] = 1.0
    hub = HubProc(tmp_path, cfg).start()
    procs.append(hub)
    ep = cfg["ingest"]["endpoint"]
    honest = WireSensor(ep, "honest", keys.sensor[0], keys.hub[1])
    spawn = mp.get_context("spawn")  # a fresh interpreter: no ZeroMQ state of this one
    sent = spawn.Value("q", 0)
    flood = spawn.Process(
        target=malformed_flood, args=(ep, str(hostile[0]), str(keys.hub[1]), 4.0, sent))
    try:
        assert honest.wait_ack(honest.send([exec_event("honest", 0)]), 15)
        quiet = honest_waits(honest, 2.0)
        flood.start()
        time.sleep(0.5)  # connected and flooding
        loud = honest_waits(honest, 3.0)
        flood.join(30)
    finally:
        if flood.is_alive():
            flood.kill()
            flood.join()
        honest.close()
    base = statistics.median(quiet)
    bound = max(4 * base, 0.005)
    slow = [w for w in loud if w > bound]
    report = (f"quiet median {base * 1000:.1f} ms; under the flood median "
              f"{statistics.median(loud) * 1000:.1f} ms, {len(slow)} of {len(loud)} acks "
              f"slower than {bound * 1000:.1f} ms; {sent.value} hostile batches sent")
    print(report)
    assert sent.value > 1000, report  # it did flood (as fast as the hub let it)
    # Before the box, most acks under the flood were slower than this bound (median ~6x
    # the quiet one); the hostile process still shares the two cores, hence not zero.
    assert len(slow) <= len(loud) // 4, report
    # ... and nothing the hostile key sent goes uncounted: its first malformed batches by
    # their reasons, the rest as penalty-box (told as its loss), the boxing in the status.
    def counted() -> dict | None:
        status = hub.status()
        bad = status["sensors"].get("hostile", {}).get("bad", {})
        return status if sum(bad.values()) >= sent.value else None

    status = wait_for(counted, 30, f"the hub to count the {sent.value} hostile batches")
    bad = status["sensors"]["hostile"]["bad"]
    assert bad.get("schema", 0) >= 20 and bad.get("body", 0) + bad.get("oversized", 0) >= 1, bad
    assert bad.get("penalty-box", 0) >= sent.value // 2, bad
    assert status["penalty_box"] == {"boxed": 1, "boxings": 1}, status["penalty_box"]
    assert status["sensors"]["honest"]["bad"] == {}, status["sensors"]["honest"]
    log = hub.log_text()
    assert log.count("penalty box: key ") == 1, log[-2000:]  # logged once
    assert "refused unread for 60 s" in log, log[-2000:]
    assert hub.stop() == 0
    losses = [e for e in read_events(out) if e["event.action"] == "sensor-loss"
              and e["threatseer.loss.counter"] == "hub_refused_penalty-box"]
    assert losses and all(e["agent.id"] == "hostile" for e in losses), losses
    final = hub.status()["sensors"]["hostile"]["bad"]  # written at the stop
    assert sum(e["threatseer.loss.batches"] for e in losses) == final["penalty-box"], final


def test_a_cluster_gateway_boxes_a_hostile_key_with_the_same_ingest(tmp_path) -> None:
    """The gateways share the hub's ingest (hub/cluster/gateway.py): a key that sends
    malformed batches to one is boxed there too, its batches counted, never produced."""
    import signal

    from cluster_helpers import curve_member_config, free_port, tansu_at

    from threatseer.hub.cluster.gateway import Gateway

    keys = Keys(tmp_path / "keys")
    hostile = keypair(tmp_path / "keys", "hostile")
    keys.allow.write_text(keys.allow.read_text() + f"{public(hostile[1]).decode()}  # x\n")
    broker = tansu_at(free_port(), tmp_path).start()
    gateway = None
    try:
        cfg = curve_member_config(tmp_path, broker.bootstrap, "gw", keys)
        cfg.ingest.penalty_strikes = 5
        gateway = Gateway(cfg)
        gateway.start()
        ep = gateway.endpoint
        honest, evil = (WireSensor(ep, "honest", keys.sensor[0], keys.hub[1]),
                        WireSensor(ep, "hostile", hostile[0], keys.hub[1]))
        try:
            assert honest.wait_ack(honest.send([exec_event("honest", 0)]), 60)
            assert evil.wait_ack(evil.send([exec_event("hostile", 0)]), 30)  # its id
            for i in range(100):
                evil.send([exec_event("honest", i)], sensor_id="honest")  # not its id
                evil.send_frames([b"\xc1", b""])  # a header that does not decode
            evil.send([exec_event("hostile", 1)])  # well-formed, but sent from the box
            wait_for(lambda: gateway.ingest.sensors["hostile"].bad.get("penalty-box", 0)
                     + gateway.ingest.sensors["hostile"].bad.get("spoofed", 0)
                     + gateway.ingest.sensors["hostile"].bad.get("header", 0) >= 201, 30,
                     "the gateway to count the hostile batches")
            assert honest.wait_ack(honest.send([exec_event("honest", 1)]), 30)
            assert not evil.wait_ack(2, 1.0)
        finally:
            honest.close()
            evil.close()
        bad = gateway.ingest.sensors["hostile"].bad
        assert bad.get("spoofed", 0) + bad.get("header", 0) == 5, bad  # then boxed
        assert gateway.counters()["penalty_box"] == {"boxed": 1, "boxings": 1}
        assert gateway.ingest.sensors["honest"].bad == {}
        assert gateway.produced == 3  # the two honest batches and the hostile's first
    finally:
        if gateway is not None:
            gateway.stop()
        broker.stop(signal.SIGKILL)
