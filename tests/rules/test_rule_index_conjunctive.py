"""Rules filed under two necessary literals (ruleset.second_requirement): the index selects a
rule only when an event carries a literal of each, and that never changes what matches."""

from __future__ import annotations

import importlib.util
import random
import shutil

import pytest
from rules_helpers import DEFAULT_BUNDLE, REPO

from threatseer.hub.rules.bundle import load_bundle
from threatseer.hub.rules.query import parse
from threatseer.hub.rules.ruleset import requirement, second_requirement

SIGMA = REPO / "tests" / "data" / "sigmahq" / "rules" / "linux"


def _bench_module(monkeypatch):
    """bench/hub_bench.py (its mix generator), with bench/ importable for its benchlib."""
    monkeypatch.syspath_prepend(str(REPO / "bench"))
    spec = importlib.util.spec_from_file_location("hub_bench", REPO / "bench" / "hub_bench.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    return mod


@pytest.fixture(scope="module")
def bench_bundle(tmp_path_factory):
    """hub_bench's rule set: the default bundle plus every SigmaHQ Linux rule once."""
    root = tmp_path_factory.mktemp("bundle") / "b"
    shutil.copytree(DEFAULT_BUNDLE, root)
    for f in SIGMA.rglob("*.yml"):
        dest = root / "sigma" / "linux" / f.relative_to(SIGMA)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(f, dest)
    return load_bundle(root)


def test_second_requirement_is_another_fields_necessary_literal() -> None:
    cond = parse("event.action = exec and process.name in (grep, ls) "
                 "and process.command_line contains (falcon, osquery) and not user.id = 0")
    first = requirement(cond)
    also = second_requirement(cond, first)
    assert {spec[1] for spec in first} | {spec[1] for spec in also} == {
        "process.name", "process.command_line"}
    assert {spec[1] for spec in first} != {spec[1] for spec in also}
    # None for an or, a single test, the same field twice, a low-cardinality field, or a
    # first requirement spanning two fields (a rule found twice through it would look like
    # both requirements met).
    for text in ("process.name = ls or process.command_line contains x",
                 "process.name = ls",
                 "process.name = ls and process.name in (ls, cat)",
                 "process.name = ls and network.direction = egress",
                 "(process.name = ls or process.executable endswith /ls) and "
                 "process.command_line contains falcon"):
        node = parse(text)
        assert second_requirement(node, requirement(node)) is None, text


def test_conjunctive_index_equals_brute_force_on_the_bench_mix(bench_bundle, monkeypatch) -> None:
    """hub_bench's own mix (with and without entity ids, plus the default bundle's test
    events with words of other rules' command lines mixed in): the indexed matcher gives
    exactly the rules that brute force evaluation of every rule gives."""
    rs = bench_bundle.ruleset
    events = _bench_module(monkeypatch).make_events(12000, seed=23)
    rng = random.Random(5)
    words = [w for t in bench_bundle.tests for w in str(t.event.get("process.command_line", ""))
             .split() if len(w) > 2]
    for i, ev in enumerate(events):
        if i % 3 == 0:
            ev["process.entity_id"] = f"{ev['host.name']}-{ev['process.pid']}"
        if ev["event.action"] == "exec" and rng.random() < 0.3:
            ev["process.command_line"] += " " + " ".join(rng.sample(words, 3))
    events += [dict(t.event) for t in bench_bundle.tests]
    hits = 0
    for ev in events:
        indexed = [r.name for r in rs.matching_rules(ev)]
        assert indexed == [r.name for r in rs.match_brute(ev)], ev
        hits += bool(indexed)
    assert hits > 1500


def test_conjunctive_filing_prunes_exec_candidates(bench_bundle) -> None:
    """The point of it: an exec of a common name (grep, bash) no longer reaches the rules
    whose command-line words it lacks."""
    rs = bench_bundle.ruleset
    conj = [g for b in rs._buckets.values() for fi in b.fields.values()
            for _, t in fi.tables for gs in t.values() for g in gs if g.needs == 2]
    assert len({id(g) for g in conj}) > 50
    ev = {"event.action": "exec", "event.category": ["process"], "process.name": "grep",
          "process.executable": "/usr/bin/grep", "process.args": ["grep", "-r", "x", "."],
          "process.command_line": "grep -r x ."}
    names = {r.name for r in rs.candidates(ev)}
    assert "security_software_discovery" not in names
    ev["process.command_line"] = "grep -i falcon|osquery"
    assert "security_software_discovery" in {r.name for r in rs.candidates(ev)}
