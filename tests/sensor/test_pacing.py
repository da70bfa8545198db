"""The send pacer (sensor/pacing.py): at once when quiet, coalesced under a steady stream."""

from __future__ import annotations

from threatseer.sensor.pacing import FULL_HOLD_RATE, GATHER_S, SendPacer


def test_quiet_host_sends_after_the_gather_time() -> None:
    p = SendPacer(0.005, 0.05, 4, now=0.0)
    assert p.ready(0.0)
    assert p.send_at(first_at := 1.0, 1.0) == first_at + GATHER_S


def test_credits_run_out_under_a_steady_stream_and_the_interval_follows_the_rate() -> None:
    p = SendPacer(0.005, 0.05, 4, now=0.0)
    now, sends = 0.0, []
    # 1,000 events/s in 1 ms steps; send whenever the pacer allows
    first = None
    while now < 3.0:
        now = round(now + 0.001, 6)
        p.note(1, now)
        if first is None:
            first = now
        if now >= p.send_at(first, now):
            p.spend(now)
            sends.append(now)
            first = None
    assert p.rate > 0.9 * FULL_HOLD_RATE
    assert abs(p.interval_s - 0.05) < 0.006
    late = [b - a for a, b in zip(sends, sends[1:], strict=False) if a > 2.0]
    assert late and min(late) >= 0.045  # ~20 batches a second, not 500
    # a quiet spell gives the credits back
    assert not p.ready(now)
    p.note(0, now + 1.0)
    assert p.ready(now + 1.0)


def test_low_rate_keeps_the_shortest_interval() -> None:
    p = SendPacer(0.005, 0.05, 4, now=0.0)
    for i in range(1, 41):
        p.note(1, i * 0.01)  # 100 events/s
    assert p.interval_s < 0.01


def test_high_rates_shorten_the_interval_again() -> None:
    p = SendPacer(0.007, 0.05, 4, now=0.0)
    for i in range(1, 301):
        p.note(100, i * 0.01)  # 10,000 events/s for 3 s
    assert 0.0069 < p.interval_s < 0.0072


def test_a_steady_rate_keeps_the_whole_hold_while_its_estimate_wanders() -> None:
    # ~1,000 events/s read in uneven polls: the estimate moves by ~10% either way
    p = SendPacer(0.007, 0.1, 4, now=0.0)
    intervals = []
    for i in range(1, 201):
        p.note(90 if i % 2 else 112, i * 0.1)
        intervals.append(p.interval_s)
    assert 850 < p.rate < 1150
    assert min(intervals[20:]) == 0.1
