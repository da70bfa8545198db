"""Fleet-wide profiles and bundles between real scorers on a real broker.

The profile test gives scorers A and B topics of their own for batches and events (so the test
chooses who scores what) and one shared profiles topic: behaviour learned through A must make
B score the same behaviour as normal (no novelty indicator), while B still flags what nobody
learned; a profile record read twice more changes nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cluster_helpers import EventsTally, produce_batch, read_topic, unpack, wait_for
from confluent_kafka import Producer

from threatseer.hub.cluster.bundles import publish_bundle
from threatseer.hub.cluster.scorer import Scorer
from threatseer.hub.rules.signing import generate_ed25519, load_signing_key, sign_archive

LS = "/usr/bin/ls"


def exec_ev(i: int, parent: str = "/bin/bash") -> dict[str, Any]:
    return {"@timestamp": "2026-11-28T03:00:00.000000Z", "event.kind": "event",
            "event.category": ["process"], "event.type": ["start"], "event.action": "exec",
            "event.id": f"e{i}", "process.pid": 100 + i, "process.executable": LS,
            "process.name": "ls", "process.args": ["ls", "-l"], "process.parent.pid": 1,
            "process.parent.executable": parent}


def wait(cond: Any, timeout: float, what: str) -> float:
    return wait_for(cond, timeout, what, 0.02)


def indicators(bootstrap: str, topic: str, event_ids: list[str]) -> dict[str, list[str]]:
    """The indicator types of each of ``event_ids`` once committed to ``topic``."""
    tally = EventsTally(bootstrap, topic, 12)
    try:
        assert tally.until(lambda t: set(event_ids) <= t.delivered.keys(), 120), \
            f"{event_ids} not in {topic}"
    finally:
        tally.close()
    return {ev["event.id"]: [i["type"] for i in ev["threatseer.indicators"]]
            for m in tally.records for ev in unpack(m.value()) if ev["event.id"] in event_ids}


def test_profile_learned_on_a_suppresses_novelty_on_b(broker: Any, hub_cfg: Any) -> None:
    own = {"profiles": {"learn_seconds": 0, "learn_min_events": 5}}

    def cfg(name: str) -> Any:
        c = hub_cfg(name, batches_topic=f"b.{name}", events_topic=f"e.{name}",
                    state_topic=f"s.{name}", scorer_group=f"g.{name}",
                    transactional_id_prefix=f"t.{name}")
        c.profiles.learn_seconds = own["profiles"]["learn_seconds"]
        c.profiles.learn_min_events = own["profiles"]["learn_min_events"]
        c.bundle = ""
        c.actions.toss_below = -100  # keep the normal (negative-scored) events to look at
        return c

    a, b = Scorer(cfg("A")), Scorer(cfg("B"))
    prod = Producer({"bootstrap.servers": broker.bootstrap})
    subject = f"host:web1:{LS}"
    try:
        a.start()
        b.start()
        wait(lambda: len(a.owned) == len(b.owned) == 12, 120, "partitions assigned")
        # A learns: 5 events in the window, the 6th closes it
        produce_batch(prod, "b.A", "s1", 1, [exec_ev(i) for i in range(6)])
        assert prod.flush(60) == 0
        wait(lambda: subject in a.pipeline.profile.profiles
             and a.pipeline.profile.profiles[subject].learned, 120, "A learns")
        took = wait(lambda: subject in b.pipeline.profile.profiles
                    and b.pipeline.profile.profiles[subject].learned, 60, "B knows")
        print(f"\nB knew what A learned {took:.2f} s after A had it")
        # B scores the learned behaviour, and something nobody learned
        prod_b = Producer({"bootstrap.servers": broker.bootstrap})
        produce_batch(prod_b, "b.B", "s1", 1, [exec_ev(100), exec_ev(101, "/usr/sbin/cron")])
        assert prod_b.flush(60) == 0
        # (the hub puts event ids in their sensor's namespace)
        found = indicators(broker.bootstrap, "e.B", ["s1:e100", "s1:e101"])
        assert found["s1:e100"] == ["normal_behavior"]
        assert "abnormal_behavior" in found["s1:e101"]
        # replayed observations change nothing
        before = b.pipeline.profile.profiles[subject]
        items, learned_at, first = set(before.items), before.learned_at, before.first_seen
        replayed = read_topic(broker.bootstrap, "threatseer.profiles", 3, idle_s=3.0)
        assert replayed
        applied = b.replicator.applied
        for _ in range(2):
            for m in replayed:
                prod.produce("threatseer.profiles", key=m.key(), value=m.value())
        assert prod.flush(60) == 0
        wait(lambda: b.replicator.applied >= applied + 2 * len(replayed), 60, "replay read")
        after = b.pipeline.profile.profiles[subject]
        assert (set(after.items), after.learned_at, after.first_seen) == \
            (items, learned_at, first)
        assert b.replicator.bad_records == 0
    finally:
        a.stop()
        b.stop()
    # B's SQLite replica holds what it merged (written at stop)
    from threatseer.hub.profiles import ProfileStore

    store = ProfileStore(b.cfg.profile_db())
    try:
        shown = store.show(subject)
        assert shown is not None and shown["learned"] and "parent" in shown["behaviors"]
    finally:
        store.close()


def test_bundle_published_once_active_on_all_scorers_tampered_on_none(
        tmp_path: Path, broker: Any, hub_cfg: Any) -> None:
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "rules"))
    from rules_helpers import build

    secret, public = generate_ed25519()
    (tmp_path / "k").write_text(secret)
    key = load_signing_key(tmp_path / "k")
    scorers = []
    for i in range(3):
        c = hub_cfg(f"sc{i}")
        c.bundle = ""
        c.admin.trusted_signing_keys = [public.strip()]
        scorers.append(Scorer(c))
    # none configured, none announced yet: each says so (status, gauges) until one arrives
    assert all(s.bundle_problems and s.metrics.rules._value.get() == 0 for s in scorers)
    assert all(s.counters()["bundle"]["problems"] for s in scorers)
    try:
        for s in scorers:
            s.start()
        good = sign_archive(build(tmp_path, "2.0.0"), key)
        publish_bundle(scorers[0].ccfg, good)
        wait(lambda: all(s.bundle_version() == "2.0.0" for s in scorers), 120, "all on 2.0.0")
        assert not any(s.bundle_problems or s.metrics.bundle_problems._value.get()
                       for s in scorers)
        # tampered: signed content of 3.0.0 with a rule changed afterwards
        signed = sign_archive(build(tmp_path, "3.0.0"), key)
        other = build(tmp_path, "3.0.0", rule_score=99)
        from threatseer.hub.rules.archive import build_archive, read_archive

        files, sig = read_archive(signed)
        tampered = build_archive(read_archive(other)[0], sig)
        publish_bundle(scorers[0].ccfg, tampered)
        wait(lambda: all(s.feed.refused >= 1 for s in scorers), 120, "all refuse it")
        assert [s.bundle_version() for s in scorers] == ["2.0.0"] * 3
        assert all("refused" in s.feed.last_error or "signature" in s.feed.last_error
                   for s in scorers), [s.feed.last_error for s in scorers]
        # `threatseer cluster status` shows each scorer's version
        from click.testing import CliRunner
        from cluster_helpers import write_config

        from threatseer.hub.cluster.cli import cluster_group

        conf = write_config(scorers[0].cfg, tmp_path / "status.yaml")
        outs: list[str] = []

        def three() -> bool:
            outs.append(CliRunner().invoke(cluster_group, ["status", "-c", str(conf)]).output)
            return outs[-1].count("bundle=2.0.0") == 3 and "WARNING" not in outs[-1]

        wait(three, 60, f"status shows 2.0.0 for the 3 scorers: {outs[-1:]}")
    finally:
        for s in scorers:
            s.stop()
