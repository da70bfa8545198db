"""Items 4 and "nothing lost silently" in a hub cluster: a scorer checks each batch's events as
the hub does, and tells what it refused as ``sensor-loss`` events of that sensor.

A real scorer (in this process) on a real Kafka-protocol broker (tansu): one batch from the
gateway's topic holds two ill-typed events beside a good one. The good one is scored, the two
are refused and counted, and a ``sensor-loss`` event of the sender (``hub_refused_schema``,
2 events) is committed to the events topic with the batch.
"""

from __future__ import annotations

import signal

from cluster_helpers import (
    EventsTally,
    curve_member_config,
    free_port,
    member_config,
    produce_batch,
    tansu_at,
    unpack,
)
from confluent_kafka import Producer

from threatseer.common import ecs
from threatseer.hub.cluster.scorer import Scorer


def _exec(i: int, **fields: object) -> dict:
    return {"@timestamp": "2026-11-28T03:00:00.000000Z", "event.kind": "event",
            "event.category": ["process"], "event.type": ["start"], "event.action": "exec",
            "event.id": f"e{i}", "process.pid": 100 + i, "process.executable": "/usr/bin/ls",
            "process.name": "ls", "process.args": ["ls"], "process.parent.pid": 1, **fields}


def test_a_scorer_tells_what_it_refused_as_the_senders_loss(tmp_path) -> None:
    broker = tansu_at(free_port(), tmp_path).start()
    scorer = None
    try:
        cfg = member_config(tmp_path, broker.bootstrap, "sc")
        cfg.bundle = ""
        cfg.actions.toss_below = -1000
        scorer = Scorer(cfg)
        scorer.start()
        prod = Producer({"bootstrap.servers": broker.bootstrap})
        produce_batch(prod, cfg.cluster.batches_topic, "s1", 1, [
            _exec(1), _exec(2, **{"event.category": ["process", 7.5]}), _exec(3, **{"event.category": [{}]})])
        assert prod.flush(60) == 0
        tally = EventsTally(broker.bootstrap, cfg.cluster.events_topic, cfg.cluster.partitions)
        try:
            assert tally.until(lambda t: "s1:e1" in t.delivered and any(
                ev["event.action"] == ecs.SENSOR_LOSS for m in t.records
                for ev in unpack(m.value())), 180), "no loss event"
            events = [ev for m in tally.records for ev in unpack(m.value())]
        finally:
            tally.close()
        losses = [ev for ev in events if ev["event.action"] == ecs.SENSOR_LOSS]
        assert [(ev["agent.id"], ev["threatseer.loss.counter"], ev["threatseer.loss.events"])
                for ev in losses] == [("s1", "hub_refused_schema", 2)]
        assert {ev["event.id"] for ev in events} - {ev["event.id"] for ev in losses} == \
            {"s1:e1"}
        assert scorer.ingest.sensors["s1"].bad == {"schema": 2}
    finally:
        if scorer is not None:
            scorer.stop()
        broker.stop(signal.SIGKILL)


def test_a_gateways_refusals_are_told_as_the_senders_loss(tmp_path) -> None:
    """What a gateway refuses of a known sensor (a batch sent under another id, an epoch far
    ahead) reaches the analysts as that sensor's ``sensor-loss`` events, made by the scorer
    with the hub's ``refused_event``, as a single hub tells them."""
    from cluster_helpers import Member
    from security_helpers import WireSensor, exec_event
    from transport_helpers import Keys

    keys = Keys(tmp_path / "keys")
    broker = tansu_at(free_port(), tmp_path).start()
    scorer = gateway = None
    try:
        gcfg = curve_member_config(tmp_path, broker.bootstrap, "gw", keys)
        gcfg.ingest.log_interval_s = 0.5
        gateway = Member("gateway", gcfg, tmp_path)
        cfg = member_config(tmp_path, broker.bootstrap, "sc")
        cfg.bundle = ""
        cfg.actions.toss_below = -1000
        scorer = Scorer(cfg)
        scorer.start()
        gateway.wait_ready()
        sensor = WireSensor(gcfg.ingest.endpoint, "s1", keys.sensor[0], keys.hub[1])
        try:
            assert sensor.wait_ack(sensor.send([exec_event("s1", 0)]), 60)
            sensor.send([exec_event("s2", 0)], seq=1, sensor_id="s2")  # not its id
            sensor.send([exec_event("s1", 1), exec_event("s1", 2)], seq=2, epoch=1 << 62)
            assert not sensor.wait_ack(2, 2.0)
        finally:
            sensor.close()
        tally = EventsTally(broker.bootstrap, cfg.cluster.events_topic, cfg.cluster.partitions)

        def losses(t: EventsTally) -> dict[str, tuple[str, int, int]]:
            return {ev["threatseer.loss.counter"]: (ev["agent.id"], ev["threatseer.loss.batches"],
                                                   ev["threatseer.loss.events"])
                    for m in t.records for ev in unpack(m.value())
                    if ev["event.action"] == ecs.SENSOR_LOSS}

        try:
            assert tally.until(lambda t: len(losses(t)) >= 2, 120), losses(tally)
            tally.drain(1.0)
            got = losses(tally)
        finally:
            tally.close()
        assert got == {"hub_refused_spoofed": ("s1", 1, 1),
                       "hub_refused_epoch": ("s1", 1, 2)}, got
    finally:
        if gateway is not None:
            gateway.stop()
        if scorer is not None:
            scorer.stop()
        broker.stop(signal.SIGKILL)
