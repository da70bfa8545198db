"""LZ4-compressed batch bodies (header "z"): round trip, old plain spools, and bad frames
(bombs, corrupt, truncated, trailing bytes, unknown codecs) refused and counted by the hub."""

from __future__ import annotations

import time

import lz4.frame
import msgpack
import pytest
import zmq

from threatseer.common import ecs, wire
from threatseer.hub.config import IngestConfig
from threatseer.hub.ingest import Ingest
from threatseer.hub.metrics import HubMetrics
from threatseer.sensor.ship import HubSink
from threatseer.sensor.spool import Spool


def event(i: int) -> dict:
    cat, typ = ecs.CATEGORIES["exec"]
    return {"@timestamp": "2026-11-28T03:00:00Z", "event.kind": "event",
            "event.category": cat, "event.type": typ, "event.action": "exec",
            "event.id": f"z:{i}", "process.pid": 7, "process.executable": "/bin/x",
            "process.args": ["x", str(i)], "process.parent.pid": 1}


def header(seq: int = 1, n: int = 1, **extra: object) -> bytes:
    return msgpack.packb({"v": wire.VERSION, "sid": "z", "seq": seq, "n": n, **extra})


def test_compressed_round_trip_is_smaller_and_keeps_common_fields() -> None:
    events = [event(i) for i in range(300)]
    common = {"host.name": "h", "agent.id": "z"}
    frames = wire.encode(wire.Batch("z", 3, [dict(e) for e in events], common=common),
                         compress=True)
    plain = wire.encode(wire.Batch("z", 3, [dict(e) for e in events], common=common))
    assert msgpack.unpackb(frames[0])["z"] == wire.LZ4 and "z" not in msgpack.unpackb(plain[0])
    assert wire.is_compressed(frames[1]) and not wire.is_compressed(plain[1])
    assert len(frames[1]) * 5 < len(plain[1])
    got = wire.decode(frames)
    assert got.seq == 3 and got.events == [{**common, **e} for e in events]
    # the hub decodes from ZeroMQ buffers (memoryviews), not bytes
    assert wire.decode([memoryview(f) for f in frames]).events == got.events


@pytest.mark.parametrize("body, reason", [
    (lz4.frame.compress(b"\x00" * (wire.MAX_BODY_BYTES + 10)), wire.TOO_LARGE),  # a bomb
    (lz4.frame.compress(msgpack.packb([{"a": 1}]))[:-3], wire.BAD_BODY),  # truncated
    (lz4.frame.compress(msgpack.packb([{"a": 1}])) + b"tail", wire.BAD_BODY),
    (lz4.frame.compress(msgpack.packb([{"a": 1}])) * 2, wire.BAD_BODY),  # two frames
    (b"\x04\x22\x4d\x18" + bytes(range(40)), wire.BAD_BODY),  # corrupt
    (msgpack.packb([{"a": 1}]), wire.BAD_BODY),  # flagged but plain
    (lz4.frame.compress(msgpack.packb({"a": 1})), wire.BAD_BODY),  # not an array
])
def test_bad_compressed_bodies_are_refused_with_a_reason(body: bytes, reason: str) -> None:
    assert len(body) < wire.MAX_BODY_BYTES
    with pytest.raises(wire.WireError) as exc:
        wire.decode([header(z=wire.LZ4), body])
    assert exc.value.reason == reason


def test_unknown_codec_is_a_bad_header() -> None:
    with pytest.raises(wire.WireError) as exc:
        wire.decode_header([header(z=9), b"\x90"])
    assert exc.value.reason == wire.BAD_HEADER


def test_hub_counts_a_bomb_as_bad_input_and_delivers_the_good_batches(port: int) -> None:
    ctx = zmq.Context()
    ingest = Ingest(ctx, IngestConfig(endpoint=f"tcp://127.0.0.1:{port}"), HubMetrics())
    dealer = ctx.socket(zmq.DEALER)
    dealer.setsockopt(zmq.LINGER, 0)
    dealer.connect(f"tcp://127.0.0.1:{port}")
    try:
        bomb = lz4.frame.compress(b"\x00" * (200 << 20))  # 200 MiB in < 1 MiB
        dealer.send_multipart(wire.encode(wire.Batch("z", 1, [event(1)]), compress=True))
        dealer.send_multipart([header(seq=2, n=1, z=wire.LZ4), bomb])
        dealer.send_multipart([header(seq=3, n=1, z=wire.LZ4), b"\x04\x22\x4d\x18junk"])
        dealer.send_multipart(wire.encode(wire.Batch("z", 4, [event(4)]), compress=True))
        received, deadline = [], time.monotonic() + 10
        while len(received) + ingest.bad_total < 4 and time.monotonic() < deadline:
            for msg in ingest.take(100):
                got = ingest.open(msg)
                if got is not None:
                    received.append(got)
        assert [(r.seq, [e["event.id"] for e in ingest.events(r)]) for r in received] == \
            [(1, ["z:1"]), (4, ["z:4"])]
        assert ingest.sensors["z"].bad == {wire.TOO_LARGE: 1, wire.BAD_BODY: 1}
        assert ingest.bad_total == 2
    finally:
        dealer.close()
        ingest.close()
        ctx.term()


def test_sensor_compresses_and_still_resends_plain_bodies_of_an_older_spool(
        tmp_path, port: int) -> None:
    spool = Spool(str(tmp_path / "spool.db"))
    spool.append(1, wire.encode_body([event(1)]))  # written by a sensor before compression
    ctx = zmq.Context()
    router = ctx.socket(zmq.ROUTER)
    router.setsockopt(zmq.LINGER, 0)
    router.bind(f"tcp://127.0.0.1:{port}")
    sink = HubSink(f"tcp://127.0.0.1:{port}", "z", "h", spool=spool, context=ctx)
    try:
        sink.send([event(2), event(3)])
        got, deadline = [], time.monotonic() + 10
        while len(got) < 2 and time.monotonic() < deadline:
            sink.flush()
            if router.poll(100):
                frames = router.recv_multipart()[1:]
                got.append((msgpack.unpackb(frames[0]).get("z"), wire.decode(frames)))
        assert [(z, b.seq, [e["event.id"] for e in b.events]) for z, b in got] == \
            [(None, 1, ["z:1"]), (wire.LZ4, 2, ["z:2", "z:3"])]
        assert wire.is_compressed(spool.get(2)[1])
        sink.flush()
        assert sink.connected  # the socket monitor's handshake event was parsed
    finally:
        sink.close(0)
        router.close()
        ctx.term()
