"""Item 4: one sensor's bad batches never cost another sensor its acks, its latency or
exactly-once output.

First against a real ``threatseer hub`` process: a hostile sensor (its own allowed key) floods
batches whose values have the wrong types (``event.kind: ["x"]``, ``event.category: [{}]`` or
``5``) and a sequence number of 2**64-1, while a victim sends 27 batches. Then, in process, a
batch that fails after the checks (a failure injected into the publisher, the one fake here:
the checks leave no real input that fails there) is given up alone: counted, kept in the
failed-batches file, acknowledged.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

import msgpack
import zmq
from hub_helpers import Sender, Subscriber, exec_event, wait_connected
from security_helpers import WireSensor, file_output, read_events
from security_helpers import exec_event as wire_event
from transport_helpers import HubProc, Keys, hub_cfg, keypair, public, wait_for

from threatseer.common import wire
from threatseer.hub import deadletter


def test_a_flood_of_ill_typed_batches_does_not_delay_another_sensor(tmp_path, procs) -> None:
    keys = Keys(tmp_path / "keys")
    attacker = keypair(tmp_path / "keys", "attacker")
    keys.allow.write_text(keys.allow.read_text() + f"{public(attacker[1]).decode()}  # b\n")
    out = tmp_path / "out" / "events.jsonl"
    cfg = hub_cfg(tmp_path, keys, outputs=[file_output(out)])
    hub = HubProc(tmp_path, cfg).start()
    procs.append(hub)
    ep = cfg["ingest"]["endpoint"]
    victim = WireSensor(ep, "victim", keys.sensor[0], keys.hub[1])
    evil = WireSensor(ep, "b", attacker[0], keys.hub[1])
    # The hub boxes this key after 20 malformed batches and then reads it only a few hundred
    # messages a second (hub/penalty.py, tests/security/test_flood.py): its queue fills, and
    # its sends give up instead of blocking the test.
    evil.sock.setsockopt(zmq.SNDTIMEO, 0)
    poisons = [{"event.kind": ["x"]}, {"event.category": [{}]}, {"event.category": 5},
               {"event.type": [[["deep"]]]}, {"process.pid": True}]
    waits = []
    try:
        assert victim.wait_ack(victim.send([wire_event("victim", 0)]), 15)
        deadline = time.monotonic() + 4
        n = 0
        while time.monotonic() < deadline:
            for poison in poisons:
                # event.kind is the hub's to set: such an event is kept (its kind replaced),
                # one a batch; the others are refused, 50 a batch
                many = 1 if "event.kind" in poison else 50
                with contextlib.suppress(zmq.Again):
                    evil.send([wire_event("b", n, **poison)] * many)
            # a batch number no SQLite integer holds
            frames = wire.encode(wire.Batch("b", (1 << 64) - 1, [wire_event("b", n)],
                                            epoch=1))
            with contextlib.suppress(zmq.Again):
                evil.send_frames(frames)
            if n % 4 == 0 and victim.seq < 28:
                t0 = time.monotonic()
                seq = victim.send([wire_event("victim", victim.seq * 10 + k) for k in range(10)])
                assert victim.wait_ack(seq, 5), f"victim batch {seq} not acknowledged"
                waits.append(time.monotonic() - t0)
            n += 1
        while victim.seq < 28:
            seq = victim.send([wire_event("victim", victim.seq * 10 + k) for k in range(10)])
            assert victim.wait_ack(seq, 5)
    finally:
        victim.close()
        evil.close()
    assert len(waits) >= 10, waits
    assert max(waits) < 2.0, sorted(waits)[-5:]  # the old hub: 1 ack in 4 s
    def victims() -> list[str]:
        return [e["event.id"] for e in read_events(out) if e["agent.id"] == "victim"]

    wait_for(lambda: len(victims()) >= 271, 30, "the victim's events in the file output")
    time.sleep(0.5)  # and nothing more comes
    ids = victims()
    assert len(ids) == len(set(ids)) == 271, (len(ids), len(set(ids)))  # 1 + 27 batches of 10, each exactly once
    st = wait_for(lambda: hub.status()["sensors"].get("b", {}).get("bad"), 10, "b's counts")
    assert st.get("schema", 0) >= 4 * 50 and st.get("header", 0) >= 1, st
    assert hub.status()["failures"] == 0
    assert hub.stop() == 0


def test_a_batch_that_fails_after_the_checks_is_given_up_alone(start_hub, zctx,
                                                               tmp_path: Path) -> None:
    hub = start_hub(ingest__log_interval_s=0.2)
    real_add = hub.publisher.add

    def add(events):  # the injected failure: every exec batch of sensor "hostile"
        if events and events[0].get("agent.id") == "hostile" and \
                events[0]["event.action"] == "exec":
            raise RuntimeError("injected failure")
        real_add(events)

    hub.publisher.add = add
    sub = Subscriber(zctx, hub.publisher.endpoint)
    good = Sender(zctx, hub.ingest.endpoint, "good")
    hostile = Sender(zctx, hub.ingest.endpoint, "hostile")
    wait_connected(good, sub)
    for i in range(20):
        hostile.send([exec_event(args=["h", str(i)])])
        good.send([exec_event(args=["g", str(i)])])
    got: list = []
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and (
            len([e for e in got if e["event.action"] == "exec"]) < 20
            or not [e for e in got if e["event.action"] == "sensor-loss"]):
        got += [ev for _t, ev in sub.collect(1, timeout_s=0.5)]
    execs = [ev for ev in got if ev["event.action"] == "exec"]
    assert sorted(int(ev["process.args"][1]) for ev in execs) == list(range(20))
    assert all(ev["agent.id"] == "good" for ev in execs)
    # each failed batch: counted, recorded as done (so acknowledged), kept whole on disk
    assert hub.ingest.sensors["hostile"].bad == {"failed": 20}
    assert hub.ledger.state["hostile"].high == 20
    assert hub.ledger.state["good"].high == good.seq  # the probe batches, then 20
    kept = deadletter.read(hub.failed_batches.path)
    assert [r["seq"] for r in kept] == list(range(1, 21))
    assert all(r["sid"] == "hostile" and "injected failure" in r["error"] for r in kept)
    body = msgpack.unpackb(kept[0]["body"], raw=False)
    assert body[0]["process.args"] == ["h", "0"]
    # ... and told as the hostile sensor's loss
    losses = [ev for ev in got if ev["event.action"] == "sensor-loss"]
    assert losses and losses[0]["agent.id"] == "hostile"
    assert losses[0]["threatseer.loss.counter"] == "hub_refused_failed"
