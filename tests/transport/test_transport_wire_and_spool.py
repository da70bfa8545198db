"""The delivery fields of the wire (epoch, base, dropped, acks) and the spool on its own."""

from __future__ import annotations

import msgpack
import pytest

from threatseer.common import wire
from threatseer.hub.ledger import AHEAD, DUPLICATE, NEW, STALE, Ledger
from threatseer.sensor.spool import Spool


def test_header_delivery_fields_round_trip_and_bad_ones_are_refused() -> None:
    b = wire.Batch("s1", 7, [{"a": 1}], epoch=123, base=5, dropped=40)
    got = wire.decode(wire.encode(b))
    assert (got.epoch, got.base, got.dropped, got.seq) == (123, 5, 40, 7)
    plain = wire.decode(wire.encode(wire.Batch("s1", 1, [])))
    assert (plain.epoch, plain.base, plain.dropped) == (0, 0, 0)
    for key, value in (("e", -1), ("b", "x"), ("d", 1.5), ("e", 1 << 63)):
        header = {"v": 1, "sid": "s", "seq": 1, "n": 0, key: value}
        with pytest.raises(wire.WireError) as exc:
            wire.decode_header([msgpack.packb(header), b"\x90"])
        assert exc.value.reason == wire.BAD_HEADER


def test_ack_frames() -> None:
    assert wire.decode_ack(wire.encode_ack(9, 41)) == (9, 41)
    for frame in (b"\xc1", msgpack.packb([1]), msgpack.packb({"v": 2, "e": 1, "ack": 1}),
                  msgpack.packb({"v": 1, "e": 1}), msgpack.packb({"v": 1, "e": -1, "ack": 1})):
        with pytest.raises(wire.WireError):
            wire.decode_ack(frame)


def test_spool_resumes_epoch_and_numbering_and_counts_what_the_bound_drops(tmp_path) -> None:
    path = str(tmp_path / "spool.db")
    sp = Spool(path, max_bytes=10_000)
    epoch = sp.epoch
    seqs = [sp.append(10, b"x" * 3000) for _ in range(3)]
    assert seqs == [1, 2, 3] and sp.count == 3 and sp.dropped_events == 0
    sp.append(10, b"x" * 3000)  # 12,000 bytes > 10,000: the oldest goes
    assert (sp.count, sp.first_seq, sp.dropped_events, sp.dropped_total) == (3, 2, 10, 10)
    assert sp.ack(2) == 10 and sp.first_seq == 3 and sp.get(2) is None
    assert sp.get(3) == (10, b"x" * 3000)
    sp.close()
    again = Spool(path, max_bytes=10_000)  # a restart
    assert (again.epoch, again.next_seq, again.first_seq, again.count) == (epoch, 5, 3, 2)
    assert again.dropped_total == 10 and again.dropped_events == 0
    assert again.get(4) == (10, b"x" * 3000)  # read back from disk, not the cache
    assert again.ack(4) == 20 and again.count == 0 and again.first_seq == 5
    again.close()
    fresh = Spool(str(tmp_path / "other.db"))
    assert fresh.epoch != epoch and fresh.next_seq == 1
    fresh.close()


def test_ledger_orders_deduplicates_and_reports_final_gaps(tmp_path) -> None:
    path = str(tmp_path / "ledger.db")
    led = Ledger(path)
    assert led.admit("s", 1, 1, 1).kind == NEW
    led.scored("s", 1, 1, 10, 10)
    assert led.admit("s", 1, 3, 2).kind == AHEAD  # 2 is still at the sender: wait for it
    assert led.admit("s", 1, 1, 1).kind == DUPLICATE
    led.commit()
    led.close()
    led = Ledger(path)  # the state survives a restart
    assert led.admit("s", 1, 1, 1).kind == DUPLICATE
    v = led.admit("s", 1, 6, 5, dropped=300)  # the sender no longer has 2..4; 5 is coming
    assert (v.kind, v.lost_batches, v.lost_events) == (AHEAD, 3, 300)
    assert led.admit("s", 1, 5, 5, dropped=300).lost_batches == 0  # reported once
    led.scored("s", 1, 5, 5, 5)
    assert led.admit("s", 1, 6, 5, dropped=300).kind == NEW
    led.scored("s", 1, 6, 5, 5)
    assert led.admit("s", 0, 9, 9).kind == STALE  # an older epoch
    v = led.admit("s", 2, 1, 1)  # a new spool: a new sequence
    assert (v.kind, v.restarted, v.lost_batches) == (NEW, True, 0)
    led.commit()
    rows = led.db.execute("SELECT sid, epoch, seq FROM scored ORDER BY seq").fetchall()
    assert rows == [("s", 1, 1), ("s", 1, 5), ("s", 1, 6)]
    assert led.db.execute("SELECT first, batches FROM gaps").fetchall() == [(2, 3)]
    led.close()


def test_runs_of_encoded_events_are_counted_and_decoded_as_events() -> None:
    """The sensor's reader hands out consecutive encoded events as one wire.Encoded run: the
    body still has one array item per event, in order, whatever the mix."""
    import msgspec

    a, b = msgspec.msgpack.encode({"n": 1}), msgspec.msgpack.encode({"n": 2})
    for items, want in (
        ([{"n": 0}, wire.Encoded(a + b, 2), {"n": 3}], [0, 1, 2, 3]),
        ([wire.Encoded(a + b, 2), wire.Encoded(a, 1)], [1, 2, 1]),
        ([wire.Encoded(a * 20, 20)], [1] * 20),
    ):
        assert wire.event_count(items) == len(want)
        frames = wire.encode(wire.Batch("s", 1, items), compress=True)
        assert [ev["n"] for ev in wire.decode(frames).events] == want


def test_a_reused_scratch_buffer_gives_the_same_bodies() -> None:
    """The sensor encodes each batch's body into one buffer it keeps (wire.encode_body's
    ``scratch``): bodies of every shape and size, one after the other in the same buffer
    (growing, shrinking, array headers of 1, 3 and 5 bytes), are those made without it."""
    import lz4.frame
    import msgspec

    a, b = msgspec.msgpack.encode({"n": 1}), msgspec.msgpack.encode({"n": 2})
    big = {"n": 4, "pad": "x" * 300_000}
    scratch = bytearray()
    for items in (
        [{"n": 0}],
        [wire.Encoded(a * 70_000, 70_000)],  # a 5-byte array header
        [{"n": i} for i in range(300)],  # 3 bytes
        [{"n": 0}, wire.Encoded(a + b, 2), {"n": 3}],
        [wire.Encoded(a + b, 2), wire.Encoded(a, 1)] * 10,
        [big, big],
        [wire.Encoded(a, 1)],
        [],
    ):
        want = wire.encode_body(items)
        got = wire.encode_body(items, compress=True, scratch=scratch)
        assert lz4.frame.decompress(got) == want
        assert wire.is_compressed(got)
