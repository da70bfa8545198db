"""Items 4 and "nothing lost silently" in a hub cluster: a scorer checks each batch's events as
the hub does, and tells what it refused as ``sensor-loss`` events of that sensor.

A real scorer (in this process) on a real Kafka-protocol broker (tansu): one batch from the
gateway's topic holds two ill-typed events beside a good one. The good one is scored, the two
are refused and counted, and a ``sensor-loss`` event of the sender (``hub_refused_schema``,
2 events) is committed to the events topic with the batch.
"""

from __future__ import annotations

import signal

from cluster_helpers import EventsTally, free_port, member_config, produce_batch, tansu_at, unpack
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
