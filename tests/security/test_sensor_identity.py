"""Items 3 and 10: an allowed sensor key cannot take over another sensor's id (not even across
hub restarts), cannot jump epochs, and cannot choose what the hub owns in its events.

Real ``threatseer hub`` processes with CURVE; the victim is tests/transport's synthetic
sensor (the real HubSink and spool), the attacker a DEALER with its own allowed key.
"""

from __future__ import annotations

from pathlib import Path

from security_helpers import WireSensor, exec_event, file_output, read_events
from transport_helpers import (
    Collector,
    HubProc,
    Keys,
    SensorProc,
    hub_cfg,
    keypair,
    public,
    wait_for,
)

from threatseer.common import ecs


def _keys_with_attacker(tmp_path: Path) -> tuple[Keys, tuple[Path, Path]]:
    keys = Keys(tmp_path / "keys")
    attacker = keypair(tmp_path / "keys", "attacker")
    keys.allow.write_text(keys.allow.read_text() + f"{public(attacker[1]).decode()}  # b\n")
    return keys, attacker


def test_a_second_key_cannot_take_over_a_sensor_id_across_restarts(tmp_path, procs) -> None:
    keys, attacker = _keys_with_attacker(tmp_path)
    cfg = hub_cfg(tmp_path, keys)
    cfg["ingest"]["log_interval_s"] = 0.5  # losses are told once per interval
    ep = cfg["ingest"]["endpoint"]
    hub = HubProc(tmp_path, cfg).start()
    procs.append(hub)
    victim = SensorProc(tmp_path, ep, "sensor-a", 2_000, keys, batch=200).start()
    procs.append(victim)
    assert victim.wait(60) == 0  # bound to its key, everything acknowledged
    hub.stop()

    # After a restart the attacker is first to speak, as sensor-a, with the largest epoch.
    hub.start()
    sub = Collector(cfg["publish"]["endpoint"], keys.subscriber[0], keys.hub[1])
    evil = WireSensor(ep, "sensor-a", attacker[0], keys.hub[1], epoch=(1 << 63) - 1)
    try:
        seq = evil.send([exec_event("sensor-a", 0)], seq=1)
        assert not evil.wait_ack(seq, 3.0), "the hub acknowledged a batch sent as another sensor"
        # Under its own name it is served; an epoch a day ahead of the hub's clock is not.
        seq = evil.send([exec_event("b", 0)], seq=1, sensor_id="b", epoch=1)
        assert evil.wait_ack(seq, 10.0, epoch=1)
        seq = evil.send([exec_event("b", 1)], seq=1, sensor_id="b", epoch=(1 << 63) - 1)
        assert not evil.wait_ack(seq, 2.0, epoch=(1 << 63) - 1)
        # the refused batch is told as a loss of the attacker's own sensor, b
        losses = wait_for(lambda: [e for e in sub.events
                                   if e.get("event.action") == ecs.SENSOR_LOSS], 15,
                          "a loss event for the refused batch")
    finally:
        evil.close()
        sub.close()
    assert {e["agent.id"] for e in losses} == {"b"}
    assert [(e["threatseer.loss.counter"], e["threatseer.loss.batches"],
             e["threatseer.loss.events"]) for e in losses] == [("hub_refused_epoch", 1, 1)]
    bad = wait_for(lambda: hub.status()["sensors"].get("sensor-a", {}).get("bad", {})
                   .get("spoofed") and hub.status()["sensors"], 10, "the spoofing in status")
    assert bad["b"]["bad"].get("epoch") == 1
    hub.stop()

    # After another restart the real sensor-a (same spool, same epoch) goes on as before.
    hub.start()
    sub = Collector(cfg["publish"]["endpoint"], keys.subscriber[0], keys.hub[1])
    try:
        more = SensorProc(tmp_path, ep, "sensor-a", 4_000, keys, batch=200).start()
        procs.append(more)
        assert more.wait(60) == 0, more.log.read_text()
        wait_for(lambda: sum(i.startswith("sensor-a:") for i in sub.ids) >= 2_000, 20,
                 "the victim's events after the attack")
    finally:
        sub.close()
    st = wait_for(lambda: hub.status()["sensors"].get("sensor-a"), 10, "sensor-a in status")
    assert "stale-epoch" not in st["bad"]
    assert hub.stop() == 0


def test_the_hub_owns_agent_id_event_kind_and_the_event_id_namespace(tmp_path, procs) -> None:
    keys, attacker = _keys_with_attacker(tmp_path)
    out = tmp_path / "out" / "events.jsonl"
    cfg = hub_cfg(tmp_path, keys, outputs=[file_output(out)],
                  actions={"toss_below": -1000, "alert_at": 50})
    hub = HubProc(tmp_path, cfg).start()
    procs.append(hub)
    evil = WireSensor(cfg["ingest"]["endpoint"], "b", attacker[0], keys.hub[1])
    try:
        forged = [exec_event("b", 1, **{"event.kind": "alert", "agent.id": "sensor-v",
                                        "event.id": "CHOSEN-ID-123", "host.name": "victim",
                                        "event.risk_score": 99, "threatseer.action": "alert"}),
                  exec_event("b", 2, **{"event.id": "sensor-v:18ec16695e5f23ec-338"})]
        seq = evil.send(forged)
        assert evil.wait_ack(seq, 10.0)
    finally:
        evil.close()
    got = wait_for(lambda: len(read_events(out)) >= 2 and read_events(out), 10, "the output")
    first, second = sorted(got, key=lambda e: e["process.pid"])
    assert first["agent.id"] == "b" and second["agent.id"] == "b"
    assert first["event.kind"] == "event" and first["event.risk_score"] == 0
    assert first["threatseer.action"] == "log"
    assert first["event.id"] == "b:CHOSEN-ID-123"
    # an id in another sensor's namespace stays in the sender's
    assert second["event.id"] == "b:sensor-v:18ec16695e5f23ec-338"
    assert hub.stop() == 0
