"""The wire is plain msgpack whatever library packs it: msgpack-python peers (older sensors and
hubs) and the msgspec-based wire module read each other's batches, and the odd shapes the
msgspec fast path does not take are still sorted out as before."""

from __future__ import annotations

import enum

import msgpack
import pytest

from threatseer.common import wire

EVENTS = [
    {"event.action": "exec", "process.pid": 7, "process.args": ["a", "b"], "user.id": "0",
     "threatseer.open.flags": [], "x.float": 1.5, "x.none": None, "x.bool": True,
     "x.big": (1 << 64) - 1, "x.neg": -(1 << 63), "x.bin": b"\x00\xff", "x.map": {"k": [1]}},
    {"event.action": "exit", "process.pid": 8, "x.text": "ü" * 300},
]


def old_header(**fields: object) -> bytes:
    return msgpack.packb({"v": wire.VERSION, "sid": "old", "seq": 1, "n": 0, **fields},
                         use_bin_type=True)


def test_msgpack_python_batches_decode() -> None:
    body = msgpack.packb(EVENTS, use_bin_type=True)
    batch = wire.decode([old_header(n=2, host="h", c={"agent.id": "a"}, e=3), body])
    assert batch.events == [{**e, "agent.id": "a"} for e in EVENTS]
    assert (batch.sensor_id, batch.host, batch.epoch) == ("old", "h", 3)


def test_wire_batches_decode_with_msgpack_python() -> None:
    header, body = wire.encode(wire.Batch("new", 5, [dict(e) for e in EVENTS], host="h",
                                          epoch=9, common={"agent.id": "a"}))
    got = msgpack.unpackb(header, raw=False)
    assert (got["v"], got["sid"], got["seq"], got["n"], got["e"], got["c"]) == (
        wire.VERSION, "new", 5, 2, 9, {"agent.id": "a"})
    assert msgpack.unpackb(body, raw=False) == EVENTS
    assert wire.decode_ack(msgpack.packb({"v": 1, "e": 2, "ack": 3})) == (2, 3)
    assert msgpack.unpackb(wire.encode_ack(2, 3)) == {"v": 1, "e": 2, "ack": 3}


def test_subclasses_of_basic_types_encode_as_their_base() -> None:
    class Name(str):
        pass

    class Level(enum.IntEnum):
        HIGH = 3

    body = wire.encode_body([{"event.action": Name("exec"), "n": Level.HIGH}])
    assert msgpack.unpackb(body) == [{"event.action": "exec", "n": 3}]
    with pytest.raises(TypeError):
        wire.encode_body([{"x": object()}])


def test_events_that_are_not_maps_are_kept_for_the_receiver_to_count() -> None:
    body = msgpack.packb([{"event.action": "exec"}, None, 3, "x"])
    batch = wire.decode([old_header(n=4), body])
    assert batch.events == [{"event.action": "exec"}, None, 3, "x"]


@pytest.mark.parametrize("body", [
    msgpack.packb({"event.action": "exec"}),  # not an array
    msgpack.packb([{1: "integer key"}]),
    msgpack.packb([{"ok": 1}, {b"bytes key": 1}]),
    msgpack.packb([{f"f{i}": i for i in range(wire.MAX_FIELDS + 1)}]),
    msgpack.packb([None] * (wire.MAX_EVENTS + 1)),
    msgpack.packb([{"a": 1}]) + b"\x00",  # bytes after the array
    b"\xdd\xff\xff\xff\xff",  # an array of 4G items in 5 bytes
    b"\x91\x81\xa1a\xa2\xf3\x28",  # a string that is not UTF-8
    b"\x91\xa2\xf3\x28",  # the same where an event should be (slow path)
    b"\x91\x81\xa1a" + b"\x91" * 100_000 + b"\xc0",  # nested too deep
])
def test_bodies_of_the_wrong_shape_are_refused_whole(body: bytes) -> None:
    with pytest.raises(wire.WireError) as info:
        wire.decode([old_header(n=1), body])
    assert info.value.reason == wire.BAD_BODY


def test_headers_with_keys_that_are_not_names_are_refused() -> None:
    with pytest.raises(wire.WireError) as info:
        wire.decode_header([msgpack.packb({"v": 1, "sid": "s", "seq": 1, "n": 0, 7: 1}),
                            b"\x90"])
    assert info.value.reason == wire.BAD_HEADER
    with pytest.raises(wire.WireError) as info:
        wire.decode_header([b"\x81\xa1v\xa2\xf3\x28", b"\x90"])  # not UTF-8
    assert info.value.reason == wire.BAD_HEADER
    with pytest.raises(wire.WireError):
        wire.decode_ack(msgpack.packb({"v": 1, "e": 1, "ack": 1, 2: 2}))


def test_decode_raw_then_slices_equal_decode() -> None:
    events = [{"event.action": "exec", "process.pid": i, "x": "y" * i} for i in range(300)]
    frames = wire.encode(wire.Batch("s", 3, events, common={"agent.id": "a"}), compress=True)
    whole = wire.decode(frames)
    batch, raws = wire.decode_raw(frames)
    assert (batch.sensor_id, batch.seq, batch.common, batch.events) == ("s", 3,
                                                                       {"agent.id": "a"}, [])
    assert len(raws) == 300
    sliced = [ev for o in range(0, 300, 128)
              for ev in wire.decode_events(raws[o:o + 128], batch.common)]
    assert sliced == whole.events and sliced[7] == {**events[7], "agent.id": "a"}


@pytest.mark.parametrize(("header_n", "body"), [
    (2, msgpack.packb([{"a": 1}])),  # count differs from the header
    (1, msgpack.packb({"a": 1})),  # not an array
    (1, b"\x91\xc1"),  # garbage
])
def test_decode_raw_refuses_what_decode_refuses(header_n: int, body: bytes) -> None:
    for decode in (wire.decode, wire.decode_raw):
        with pytest.raises(wire.WireError) as info:
            decode([old_header(n=header_n), body])
        assert info.value.reason == wire.BAD_BODY


def test_a_slice_that_does_not_decode_is_refused_alone() -> None:
    body = msgpack.packb([{"a": 1}, {2: "integer key"}])
    batch, raws = wire.decode_raw([old_header(n=2), body])
    assert wire.decode_events(raws[:1], {}) == [{"a": 1}]
    with pytest.raises(wire.WireError) as info:
        wire.decode_events(raws[1:], {})
    assert info.value.reason == wire.BAD_BODY
