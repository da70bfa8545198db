"""Item 14: what the hub keeps per batch is bounded, whatever a fleet sends.

The ledger once kept one row per scored batch for ``ledger_keep_days`` (4.4 KB/s of
``ledger.db`` at ~1k events/s, tens of GB for a fleet). Deduplication needs only each
sensor's state (epoch, highest sequence); the records of what was scored are kept for each
sensor's last ``keep_batches`` batches. A real SQLite ledger takes thousands of batches from a
few sensors: its rows stop at the window, its file stops growing, and deduplication still
knows every batch it ever scored. (The hub's RSS under a steady load is bench/soak_bench.py's.)
"""

from __future__ import annotations

import sqlite3

from threatseer.hub.ledger import DUPLICATE, NEW, Ledger

SENSORS = ("s1", "s2", "s3")
KEEP = 50


def _size(path) -> int:  # type: ignore[no-untyped-def]
    return sum(p.stat().st_size for p in path.parent.glob(path.name + "*"))


def test_the_ledger_stays_bounded_and_still_deduplicates(tmp_path) -> None:
    path = tmp_path / "ledger.db"
    led = Ledger(str(path), keep_batches=KEEP)
    sizes = []
    seq = 0
    try:
        for _cycle in range(400):
            for _ in range(10):
                seq += 1
                for sid in SENSORS:
                    assert led.admit(sid, 7, seq, 1).kind == NEW
                    led.scored(sid, 7, seq, 100, 3)
            led.commit()
            if seq % 1000 == 0:
                led.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                sizes.append(_size(path))
        # deduplication needs the state alone: the first batch is still known as scored
        assert led.admit("s1", 7, 1, 1).kind == DUPLICATE
        assert led.admit("s2", 7, seq, 1).kind == DUPLICATE
    finally:
        led.close()
    db = sqlite3.connect(str(path))
    try:
        per_sensor = dict(db.execute("SELECT sid, count(*) FROM scored GROUP BY sid"))
        assert per_sensor == dict.fromkeys(SENSORS, KEEP)  # 4,000 batches each, 50 kept
        assert db.execute("SELECT count(*) FROM sensors").fetchone()[0] == len(SENSORS)
    finally:
        db.close()
    # the file stops growing once the windows are full (freed pages are reused)
    assert sizes[-1] <= sizes[0] * 1.2 + 16384, sizes
