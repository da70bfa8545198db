"""Run a bundle's embedded tests: each event must fire (or must not fire) its rule.

Tests go through the indexed ``match`` path the hub uses, so a rule the index would never
reach fails its tests.
"""

from __future__ import annotations

from threatseer.hub.rules.model import Bundle
from threatseer.hub.rules.ruleset import IndexedRuleSet


def run_tests(bundle: Bundle) -> tuple[int, list[str]]:
    """(number of tests run, failure messages)."""
    ruleset = bundle.ruleset
    failures: list[str] = []
    for test in bundle.tests:
        if isinstance(ruleset, IndexedRuleSet):
            fired = {r.name for r in ruleset.matching_rules(test.event)}
        else:
            fired = {i.rule for i in ruleset.match(test.event)}
        if (test.rule in fired) != test.expect_match:
            what = "did not match" if test.expect_match else "matched but must not"
            failures.append(f"{test.source}: rule {test.rule!r} {what}: {test.event}")
    return len(bundle.tests), failures
