"""The penalty box's rule (hub/penalty.py): strikes within a window box a sender for a while,
then it starts again with none; 0 strikes turns it off. The clock is passed in."""

from __future__ import annotations

import logging

from threatseer.hub.penalty import PenaltyBox


def test_strikes_within_the_window_box_a_sender_until_the_box_ends(caplog) -> None:
    caplog.set_level(logging.INFO, logger="threatseer.hub.ingest")
    box = PenaltyBox(strikes=3, window_s=10, box_s=60)
    assert not box.strike("K", 0.0, "header") and not box.strike("K", 1.0, "body")
    assert not box.boxed("K", 2.0)
    assert box.strike("K", 9.0, "schema")  # the third within 10 s
    assert box.boxed("K", 9.0) and box.boxed("K", 68.9) and not box.boxed(b"peer", 10.0)
    assert not box.strike("K", 10.0, "header")  # already boxed: not boxed again
    assert box.status() == {"boxed": 1, "boxings": 1}
    assert not box.boxed("K", 69.0)  # over: it may send again, with no strikes
    assert box.status() == {"boxed": 0, "boxings": 1}
    assert not box.strike("K", 70.0, "header")
    lines = [r.getMessage() for r in caplog.records]
    assert lines == ["penalty box: key K sent 3 malformed batches within 10 s (last: schema): "
                     "its messages are refused unread for 60 s (counted as penalty-box)",
                     "penalty box: key K may send again"], lines


def test_strikes_spread_over_windows_never_box(caplog) -> None:
    box = PenaltyBox(strikes=3, window_s=10, box_s=60)
    for t in (0.0, 5.0, 10.0, 15.0, 20.0, 25.0):  # two a window
        assert not box.strike(b"\x00\x01", t, "header")
    assert not box.boxed(b"\x00\x01", 26.0)
    off = PenaltyBox(strikes=0, window_s=10, box_s=60)
    assert not any(off.strike("K", float(t), "header") for t in range(100))
    assert not off.boxed("K", 100.0)
