"""hub/acks.py: at most one ack per delay per sensor connection, never a lost one."""

from __future__ import annotations

from threatseer.hub.acks import ACK_AT_ONCE_BYTES, ACK_AT_ONCE_OUTSTANDING, DelayedAcks


def test_first_ack_at_once_then_coalesced_until_due() -> None:
    acks = DelayedAcks(0.1)
    key = (b"peer", "s1")
    assert acks.add(key, 7, 1, 1, now=0.0) == (7, 1)
    assert acks.add(key, 7, 2, 1, now=0.01) is None
    assert acks.add(key, 7, 3, 2, now=0.02) is None
    assert acks.next_due() == 0.1
    assert acks.due(0.05) == []
    assert acks.due(0.1) == [(key, 7, 3)]  # cumulative: covers 2 and 3
    assert acks.next_due() is None


def test_many_outstanding_or_no_spool_is_acked_at_once() -> None:
    acks = DelayedAcks(0.1)
    key = (b"peer", "s1")
    acks.add(key, 1, 1, 1, now=0.0)
    assert acks.add(key, 1, 9, ACK_AT_ONCE_OUTSTANDING, now=0.01) == (1, 9)
    assert acks.add(key, 1, 10, 0, now=0.02) == (1, 10)  # base 0: a sender without a spool


def test_many_bytes_since_the_last_ack_are_acked_at_once() -> None:
    # a few big batches would fill the sensor's in-flight bytes long before 8 of them
    acks = DelayedAcks(0.5)
    key = (b"peer", "s1")
    assert acks.add(key, 1, 1, 1, now=0.0, nbytes=ACK_AT_ONCE_BYTES) == (1, 1)  # first: at once
    assert acks.add(key, 1, 2, 1, now=0.01, nbytes=ACK_AT_ONCE_BYTES // 2) is None
    assert acks.add(key, 1, 3, 2, now=0.02, nbytes=ACK_AT_ONCE_BYTES // 2) == (1, 3)
    # counted from that ack on: small ones wait for the delay again
    assert acks.add(key, 1, 4, 1, now=0.03, nbytes=ACK_AT_ONCE_BYTES // 2) is None
    assert acks.due(0.53) == [(key, 1, 4)]
    assert acks.add(key, 1, 5, 1, now=0.54, nbytes=ACK_AT_ONCE_BYTES // 2) is None


def test_stop_sends_everything_pending() -> None:
    acks = DelayedAcks(0.1)
    acks.add((b"a", "s1"), 1, 1, 1, now=0.0)
    acks.add((b"a", "s1"), 1, 2, 1, now=0.01)
    acks.add((b"b", "s2"), 2, 5, 1, now=0.0)
    acks.add((b"b", "s2"), 2, 6, 1, now=0.01)
    assert sorted(acks.due(0.02, everything=True)) == [((b"a", "s1"), 1, 2), ((b"b", "s2"), 2, 6)]
