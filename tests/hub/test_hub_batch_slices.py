"""The hub scores a big batch a slice (CHUNK_EVENTS events) at a time: every event of a
several-slice batch comes out once, in order, with its batch's sensor, sequence number and
common fields; a slice that does not decode is counted once and the other slices still flow."""

from __future__ import annotations

import time

import msgpack
import zmq
from hub_helpers import Sender, Subscriber, exec_event, wait_connected

from threatseer.common import wire
from threatseer.hub.daemon import CHUNK_EVENTS


def test_a_batch_of_several_slices_comes_out_whole_and_in_order(start_hub, zctx) -> None:
    hub = start_hub()
    sub = Subscriber(zctx, hub.publisher.endpoint)
    sender = Sender(zctx, hub.ingest.endpoint, "big")
    wait_connected(sender, sub)
    n = 3 * CHUNK_EVENTS + 5
    events = [exec_event(args=["ls", str(i)]) for i in range(n)]
    for ev in events:
        del ev["host.name"]  # travels once per batch, in the header's common fields
    sender.seq += 1
    sender.send_raw(wire.encode(wire.Batch("big", sender.seq, events, host="web1",
                                           common={"host.name": "web1"})))
    got = sub.collect(n)
    assert [int(ev["process.args"][1]) for _t, ev in got] == list(range(n))
    assert {(ev["agent.id"], ev["threatseer.batch.seq"], ev["host.name"])
            for _t, ev in got} == {("big", sender.seq, "web1")}
    assert sub.drain() == []
    deadline = time.monotonic() + 5  # counted after it is published
    while time.monotonic() < deadline and hub.ingest.sensors["big"].events_out < n:
        time.sleep(0.05)
    assert hub.ingest.sensors["big"].events_out >= n  # (plus the probes)


def test_a_slice_that_does_not_decode_costs_only_its_own_events(start_hub, zctx) -> None:
    hub = start_hub()
    sub = Subscriber(zctx, hub.publisher.endpoint)
    sender = Sender(zctx, hub.ingest.endpoint, "odd")
    wait_connected(sender, sub)
    events: list[dict] = [exec_event(args=["ok", str(i)]) for i in range(2 * CHUNK_EVENTS)]
    events[CHUNK_EVENTS + 3] = {7: "a key that is not a name"}  # refused as the 2nd slice
    sender.seq += 1
    header = msgpack.packb({"v": wire.VERSION, "sid": "odd", "seq": sender.seq,
                            "n": len(events), "t": 0, "host": "h"})
    sender.send_raw([header, msgpack.packb(events)])
    got = sub.collect(CHUNK_EVENTS)
    assert [int(ev["process.args"][1]) for _t, ev in got] == list(range(CHUNK_EVENTS))
    assert sub.drain() == []
    assert hub.ingest.sensors["odd"].bad == {wire.BAD_BODY: 1}
    assert hub._thread.is_alive()


def test_publisher_joins_the_slices_of_a_batch_into_one_message_per_topic(zctx) -> None:
    from hub_helpers import base, endpoint

    from threatseer.hub.publish import Publisher, decode

    pub = Publisher(zctx, endpoint())
    sub = zctx.socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.connect(pub.endpoint)
    try:
        deadline = time.monotonic() + 10
        while not sub.poll(50):  # slow joiner: probe until the subscription is through
            assert time.monotonic() < deadline
            pub.publish([base("exit")])
        while sub.poll(200):
            sub.recv_multipart()
        exits = [base("exit", **{"process.pid": i}) for i in range(40)]
        bad = base("exit", **{"process.pid": 1 << 70})  # msgpack cannot carry it
        pub.add(exits[:3] + [base("fork")])
        pub.add(exits[3:20] + [bad])
        pub.add(exits[20:])
        pub.flush()
        got = {}
        while sub.poll(500):
            topic, events = decode(sub.recv_multipart())
            assert topic not in got
            got[topic] = events
        assert [e["process.pid"] for e in got["event.process.exit"]] == list(range(40))
        assert [e["event.action"] for e in got["event.process.fork"]] == ["fork"]
        assert pub.unpackable == 1
    finally:
        sub.close(linger=0)
        pub.close()
