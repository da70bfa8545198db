"""The index equals brute force on the hub benchmark's rule set: the default bundle plus every
SigmaHQ Linux rule in tests/data/sigmahq, over events built from the rules' own literals (hits,
near misses with changed case, prefixes and suffixes, and non-ASCII look-alikes)."""

from __future__ import annotations

import random
import shutil

import pytest
from rules_helpers import DEFAULT_BUNDLE, REPO

from threatseer.hub.rules.bundle import load_bundle
from threatseer.hub.rules.query.ast import And, Cmp, Field, Node, Not, Or
from threatseer.hub.rules.query.compiler import _closures, compile_condition

SIGMA = REPO / "tests" / "data" / "sigmahq" / "rules" / "linux"


def literals(node: Node, out: dict[str, list]) -> None:
    if isinstance(node, Cmp):
        for name in (node.field.name, *node.field.fallbacks):
            out.setdefault(name, []).extend(v for v in node.values if v is not None)
    elif isinstance(node, And | Or):
        for item in node.items:
            literals(item, out)
    elif isinstance(node, Not):
        literals(node.item, out)


def variant(value: object, rng: random.Random) -> object:
    if not isinstance(value, str):
        return value
    text = value.strip("^$\\AZ")  # regex anchors: keep the literal part
    pick = rng.random()
    if pick < 0.2:
        text = text.upper()
    elif pick < 0.35:
        text = "/usr/bin/x " + text + " -v"
    elif pick < 0.45:
        text = text.replace("s", "\u017f").replace("k", "\u212a")  # Unicode case partners
    elif pick < 0.55:
        text = text[1:]
    return text


@pytest.fixture(scope="module")
def benchmark_rules(tmp_path_factory):
    root = tmp_path_factory.mktemp("bundle") / "b"
    shutil.copytree(DEFAULT_BUNDLE, root)
    for f in SIGMA.rglob("*.yml"):  # over the default bundle's copies: one of each rule
        dest = root / "sigma" / "linux" / f.relative_to(SIGMA)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(f, dest)
    return load_bundle(root)


def random_events(bundle, n: int, seed: int = 11):
    """Events built from the rules' own literals (see the module docstring)."""
    pool: dict[str, list] = {}
    for rule in bundle.ruleset.rules:
        literals(rule.condition, pool)
    fields = sorted(k for k, v in pool.items() if v and k not in ("event.action", "event.category"))
    rng = random.Random(seed)
    seeds = [t.event for t in bundle.tests]
    for _ in range(n):
        ev = dict(rng.choice(seeds))
        ev["event.action"] = rng.choice(["exec", "open", "connect", "dns-query", "accept"])
        for name in rng.sample(fields, k=rng.randint(1, 5)):
            value = variant(rng.choice(pool[name]), rng)
            ev[name] = [value, "x"] if name in ("process.args",) else value
        if rng.random() < 0.3:
            ev["threatseer.open.flags"] = rng.choice([["write", "create"], ["read"]])
        yield ev


def test_index_equals_brute_force_with_sigmahq_rules(benchmark_rules) -> None:
    rs = benchmark_rules.ruleset
    assert len(rs) > 200  # the default bundle's own rules and each SigmaHQ Linux rule once
    hits = 0
    for i, ev in enumerate(random_events(benchmark_rules, 6000)):
        indexed = [r.name for r in rs.matching_rules(ev)]
        assert indexed == [r.name for r in rs.match_brute(ev)], (i, ev)
        hits += bool(indexed)
    assert hits > 300


def test_generated_conditions_equal_nested_closures(benchmark_rules) -> None:
    """Each condition is one generated function; the nested closures it replaced (still the
    fallback for conditions too deep to generate) must agree with it on every event."""
    rules = benchmark_rules.ruleset.rules
    closures = [(r, _closures(r.condition)) for r in rules]
    assert all(r.predicate.__code__.co_filename == "<condition>" for r in rules)
    hits = 0
    for i, ev in enumerate(random_events(benchmark_rules, 1500, seed=5)):
        for rule, old in closures:
            got = rule.predicate(ev)
            assert bool(got) == bool(old(ev)), (i, rule.name, ev)
            hits += bool(got)
    assert hits > 100


def test_a_condition_too_deep_to_generate_falls_back_to_closures() -> None:
    node: Node = Cmp(Field("process.name"), "=", ("a",), False)
    for _ in range(400):  # beyond Python's limit on nested parentheses
        node = Not(node)
    pred = compile_condition(node)
    assert pred.__code__.co_filename != "<condition>"
    assert pred({"process.name": "a"}) is True and pred({"process.name": "b"}) is False


def test_indicator_dicts_equal_indicators(benchmark_rules) -> None:
    """What the engine appends (``indicator_dict``, one dict display) is byte for byte what
    ``indicator(event).as_dict()`` gives, keys in the same order, for every rule that is not
    a sequence step, over events with present, absent, list and number fields; and the output
    text equals a regex substitution of each placeholder."""
    import msgspec

    from threatseer.hub.rules.ruleset import _TEMPLATE_FIELD, _field_text, render

    enc = msgspec.msgpack.Encoder(enc_hook=str).encode
    rules = [r for r in benchmark_rules.ruleset.rules if getattr(r, "sequence", None) is None]
    assert sum(bool(r.output) for r in rules) > 50
    events = list(random_events(benchmark_rules, 300, seed=3))
    events.append({"process.args": ["a", 1, True], "process.pid": 7, "destination.port": 443,
                   "process.name": "ba\u017fh", "process.command_line": ""})
    for ev in events:
        for rule in rules:
            got = rule.indicator_dict(ev)
            want = rule.indicator(ev).as_dict()
            assert list(got.items()) == list(want.items()), (rule.name, ev)
            assert enc(got) == enc(want)
            if rule.output:
                assert render(rule.output, ev) == _TEMPLATE_FIELD.sub(
                    lambda m, ev=ev: _field_text(ev.get(m.group(1))), rule.output)
