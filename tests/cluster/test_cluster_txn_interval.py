"""A scorer's transactions on one partition start at least ``cluster.txn_interval_ms`` apart:
a stream of small batches is committed in a few larger transactions, every event once."""

from __future__ import annotations

import time
from typing import Any

from cluster_helpers import EventsTally, produce_batch, wait_for
from confluent_kafka import Producer
from test_cluster_profiles_bundles import exec_ev

from threatseer.hub.cluster.scorer import Scorer

INTERVAL_S = 0.4
BATCHES = 30


def test_transactions_start_the_interval_apart(broker: Any, hub_cfg: Any) -> None:
    cfg = hub_cfg("T", batches_topic="b.T", events_topic="e.T", state_topic="s.T",
                  scorer_group="g.T", transactional_id_prefix="t.T")
    cfg.bundle = ""
    cfg.profiles.enabled = False
    cfg.actions.toss_below = -100  # every event is emitted
    cfg.cluster.txn_interval_ms = int(INTERVAL_S * 1000)
    scorer = Scorer(cfg)
    prod = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 0})
    tally = EventsTally(broker.bootstrap, "e.T", 12)
    try:
        scorer.start()
        wait_for(lambda: len(scorer.owned) == 12, 120, "partitions assigned")
        t0 = time.monotonic()
        for seq in range(1, BATCHES + 1):  # one sensor: one partition, a batch every ~20 ms
            produce_batch(prod, "b.T", "s1", seq, [exec_ev(seq)])
            assert prod.flush(30) == 0
            time.sleep(0.02)
        ids = {f"s1:e{seq}" for seq in range(1, BATCHES + 1)}
        assert tally.until(lambda t: ids <= t.delivered.keys(), 120), "events not committed"
        elapsed = time.monotonic() - t0
        wait_for(lambda: all(o.job is None and o.upto is None for o in scorer.owned.values()),
                 30, "last transaction settled")
    finally:
        scorer.stop()
        tally.close()
    assert scorer.batches == BATCHES
    assert tally.delivered.keys() == ids and set(tally.delivered.values()) == {1}  # once each
    # One transaction per started interval at most (+1 for the first, +1 for rounding).
    assert scorer.transactions <= elapsed / INTERVAL_S + 2, \
        f"{scorer.transactions} transactions for {BATCHES} batches in {elapsed:.2f} s"
    assert scorer.transactions < BATCHES
