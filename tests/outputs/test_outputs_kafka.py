"""Kafka output against the tansu broker: keys, headers, delivery reports, broker restart.

tansu runs with in-memory storage, so a restart empties it: the restart test consumes what
was acknowledged before the stop, then what was delivered after, and checks the union.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections import defaultdict
from typing import Any

from confluent_kafka import Consumer

from tests.outputs.conftest import make_event, wait_for
from threatseer.hub.outputs import OutputConfig, Outputs


def output(bootstrap: str, **kw: Any) -> OutputConfig:
    return OutputConfig(type="kafka", options={"bootstrap_servers": bootstrap, "topic": "ts",
                                               "delivery_timeout_s": 3.0},
                        retry_max_s=0.5, flush_interval_s=0.1, batch_size=200,
                        queue_size=100_000, **kw)


def consume(bootstrap: str, n: int, timeout: float = 30.0) -> list[Any]:
    """Read ``n`` messages of topic ts from the earliest offset (tansu's LATEST is off)."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"t-{uuid.uuid4()}",
                  "auto.offset.reset": "earliest", "session.timeout.ms": 6000,
                  "enable.auto.commit": False})
    c.subscribe(["ts"])
    got: list[Any] = []
    deadline = time.monotonic() + timeout
    try:
        while len(got) < n and time.monotonic() < deadline:
            msg = c.poll(0.5)
            if msg is not None and not msg.error():
                got.append(msg)
    finally:
        c.close()
    return got


def test_keys_headers_and_delivery_reports(kafka_broker: Any) -> None:
    outs = Outputs([output(kafka_broker.bootstrap)])
    outs.start()
    events = [make_event(i) for i in range(400)]
    for i, e in enumerate(events):
        if i % 4 == 0:
            e["container.image.name"] = f"registry/app{i % 3}:1"
        outs.emit(e)
    outs.close(20)
    st = outs.status()[0]
    assert (st["sent"], st["failed"], st["dropped"]) == (400, 0, 0)
    msgs = consume(kafka_broker.bootstrap, 400)
    assert len(msgs) == 400
    partitions: dict[bytes, set[int]] = defaultdict(set)
    for m in msgs:
        doc = json.loads(m.value())
        assert dict(m.headers())["event.id"].decode() == doc["event"]["id"]
        image = doc.get("container", {}).get("image", {}).get("name")
        want = image or f"{doc['host']['name']}:{doc['process']['executable']}"
        assert m.key().decode() == want
        partitions[m.key()].add(m.partition())
    assert all(len(p) == 1 for p in partitions.values())  # one subject, one partition
    assert len(partitions) == 3 + 15  # three images, three hosts x five executables
    assert len({p for ps in partitions.values() for p in ps}) > 1  # spread over partitions
    assert {json.loads(m.value())["event"]["id"] for m in msgs} == {e["event.id"] for e in events}


def test_broker_restart_mid_stream(kafka_broker: Any) -> None:
    outs = Outputs([output(kafka_broker.bootstrap)])
    outs.start()
    total = 1500
    first = 600
    for i in range(first):
        outs.emit(make_event(i))
    wait_for(lambda: outs.status()[0]["sent"] == first, what="first part delivered")
    before = consume(kafka_broker.bootstrap, first)
    assert len(before) == first
    kafka_broker.stop()

    def pipeline() -> None:
        for i in range(first, total):
            outs.emit(make_event(i))
            if i % 100 == 0:
                time.sleep(0.02)

    t = threading.Thread(target=pipeline)
    t.start()
    wait_for(lambda: not outs.status()[0]["connected"], timeout=20, what="broker loss noticed")
    time.sleep(0.5)
    kafka_broker.start()
    t.join()
    wait_for(lambda: outs.status()[0]["sent"] >= total, timeout=60, what="backlog delivered")
    outs.close(20)
    st = outs.status()[0]
    assert st["dropped"] == 0 and st["failed"] == 0 and st["retries"] > 0
    after = consume(kafka_broker.bootstrap, st["sent"] - first, timeout=30)
    ids = [dict(m.headers())["event.id"].decode() for m in before + after]
    assert set(ids) == {f"ev-{i}" for i in range(total)}
    assert len(ids) == st["sent"]  # every delivery report matches a stored message


def test_oversized_message_is_failed_not_retried_forever(kafka_broker: Any) -> None:
    cfg = output(kafka_broker.bootstrap)
    cfg.options["config"] = {"message.max.bytes": 4000}
    outs = Outputs([cfg])
    outs.start()
    outs.emit(make_event(1))
    outs.emit(make_event(2, **{"process.command_line": "x" * 10_000}))
    outs.emit(make_event(3))
    outs.close(20)
    st = outs.status()[0]
    assert (st["sent"], st["failed"], st["queue_depth"]) == (2, 1, 0)
    assert "too large" in st["last_error"].lower() or st["last_error"] == ""
    ids = sorted(dict(m.headers())["event.id"].decode() for m in consume(kafka_broker.bootstrap, 2))
    assert ids == ["ev-1", "ev-3"]
