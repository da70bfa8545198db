"""The index never changes results: indexed matching equals brute force over an event mix."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from rules_helpers import DEFAULT_BUNDLE, write_bundle

from threatseer.hub.rules.bundle import complete_event, load_bundle
from threatseer.hub.rules.query import parse
from threatseer.hub.rules.ruleset import (
    IndexedRuleSet,
    literal_key,
    possible_actions,
    required_substrings,
)

ACTIONS = ["exec", "open", "connect", "accept", "dns-query", "fork", "exit", "weird", None]


def event_mix(seed_events: list[dict], n: int, seed: int) -> list[dict]:
    """Seed events, plus mutants mixing their fields across actions (near-misses and hits)."""
    rng = random.Random(seed)
    pool: dict[str, list] = {}
    for e in seed_events:
        for k, v in e.items():
            pool.setdefault(k, []).append(v)
    keys = sorted(pool)
    out = list(seed_events)
    for _ in range(n):
        base = dict(rng.choice(seed_events))
        for k in rng.sample(keys, k=min(len(keys), rng.randint(1, 6))):
            base[k] = rng.choice(pool[k])
        if rng.random() < 0.3:
            base["event.action"] = rng.choice(ACTIONS)
        if rng.random() < 0.2:
            base.pop("event.category", None)
        out.append(base)
    return out


@pytest.fixture(scope="module")
def default_bundle():
    return load_bundle(DEFAULT_BUNDLE)


def test_index_equals_brute_force_on_default_bundle(default_bundle) -> None:
    rs = default_bundle.ruleset
    assert isinstance(rs, IndexedRuleSet)
    seeds = [t.event for t in default_bundle.tests]
    events = event_mix(seeds, 4000, seed=7)
    hits = 0
    for ev in events:
        indexed = [r.name for r in rs.matching_rules(ev)]
        brute = [r.name for r in rs.match_brute(ev)]
        assert indexed == brute, ev
        hits += bool(brute)
    assert hits > 200  # the mix really exercises matching rules, not only misses


def test_index_prunes_most_rules(default_bundle) -> None:
    rs = default_bundle.ruleset
    ev = complete_event({"event.action": "exec", "process.name": "ls",
                         "process.executable": "/usr/bin/ls", "process.command_line": "ls -la"})
    assert len(rs.candidates(ev)) < len(rs) / 2


def test_index_analysis() -> None:
    assert possible_actions(parse("event.action = exec and x = 1")) == {"exec"}
    assert possible_actions(parse("event.category = network")) == {
        "connect", "accept", "listen", "dns-query"}
    assert possible_actions(parse("event.action = exec or event.action = open")) == {"exec", "open"}
    assert possible_actions(parse("event.action = exec or x = 1")) is None
    assert possible_actions(parse("not event.action = exec")) is None
    spec, values = literal_key(parse("event.action = exec and process.name in (a, b)"))
    assert spec == ("eq", "process.name", False) and {"a", "b"} <= values
    assert literal_key(parse("process.name = a or process.name = b"))[1] >= {"a", "b"}
    assert literal_key(parse("process.name = a or user.name = b")) is None
    assert literal_key(parse("not process.name = a")) is None
    spec, values = literal_key(parse("process.executable endswith ('/nc', '/ncat')"))
    assert spec[0] == "base" and values == {"nc", "ncat"}
    assert literal_key(parse("process.executable endswith 'bin/nc'")) is None


def test_index_with_list_valued_key_fields(tmp_path: Path) -> None:
    bundle = load_bundle(write_bundle(tmp_path / "b", {"rules/r.yaml": """\
        rules:
          - {rule: a, condition: "process.args = -e and event.action = exec", score: 1}
          - {rule: b, condition: "process.args in (-e, -c)", score: 1}
          - {rule: c, condition: "event.category = process and process.args ieq -X", score: 1}
        """}))
    rs = bundle.ruleset
    ev = {"event.action": "exec", "event.category": ["process"],
          "process.args": ["nc", "-e", "-c", "-x"]}
    assert [r.name for r in rs.matching_rules(ev)] == ["a", "b", "c"]
    assert [r.name for r in rs.match_brute(ev)] == ["a", "b", "c"]


def test_required_substrings() -> None:
    f, needles = required_substrings(parse("a contains X and (b startswith yy or b endswith zz)"))
    assert (f, needles) == ("b", {"yy", "zz"})  # the longer shortest needle wins
    assert required_substrings(parse("a contains x or b contains y")) is None
    assert required_substrings(parse("a regex x")) is None
    assert required_substrings(parse("not a contains x")) is None
    assert required_substrings(parse("a icontains (Foo, bar)")) == ("a", {"foo", "bar"})


def test_substring_index_on_lists_and_case(tmp_path: Path) -> None:
    bundle = load_bundle(write_bundle(tmp_path / "b", {"rules/r.yaml": """\
        rules:
          - {rule: a, condition: "process.args contains '/dev/tcp'", score: 1}
          - {rule: b, condition: "process.command_line icontains ('MKFIFO', 'xyz')", score: 1}
          - {rule: c, condition: "process.command_line contains Curl", score: 1}
        """}))
    rs = bundle.ruleset
    ev = {"event.action": "exec", "process.args": ["x", "a/dev/tcp/1"],
          "process.command_line": "mkfifo curl"}
    assert [r.name for r in rs.matching_rules(ev)] == ["a", "b"]
    assert [r.name for r in rs.match_brute(ev)] == ["a", "b"]
    assert [r.name for r in rs.matching_rules({**ev, "process.command_line": "Curl"})] == ["a", "c"]
