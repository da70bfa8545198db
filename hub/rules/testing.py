"""Run a bundle's embedded tests: each event must fire (or must not fire) its rule.

Tests go through the indexed ``match`` path the hub uses, so a rule the index would never
reach fails its tests.
"""

from __future__ import annotations

from dataclasses import dataclass

from threatseer.hub.rules.model import Bundle, RuleTest
from threatseer.hub.rules.ruleset import IndexedRuleSet


@dataclass(frozen=True)
class TestFailure:
    test: RuleTest
    message: str  # "file:line: rule 'x' did not match: {event}"


def check(bundle: Bundle) -> tuple[int, list[TestFailure]]:
    """(number of tests run, the failed ones)."""
    ruleset = bundle.ruleset
    failures: list[TestFailure] = []
    try:
        for test in bundle.tests:
            if test.events:  # a sequence: its events in order, from a clean state
                if isinstance(ruleset, IndexedRuleSet):
                    ruleset.reset_sequences()
                fired = {i["rule"] for ev in test.events for i in ruleset.match_dicts(ev)} \
                    if isinstance(ruleset, IndexedRuleSet) else set()
            elif isinstance(ruleset, IndexedRuleSet):
                fired = {r.name for r in ruleset.matching_rules(test.event)}
            else:
                fired = {i.rule for i in ruleset.match(test.event)}
            if (test.rule in fired) != test.expect_match:
                what = "did not match" if test.expect_match else "matched but must not"
                shown = list(test.events) if test.events else test.event
                failures.append(TestFailure(test, f"{test.source}: rule {test.rule!r} {what}: "
                                                  f"{shown}"))
    finally:
        if isinstance(ruleset, IndexedRuleSet):
            ruleset.reset_sequences()  # the tested bundle starts live with no partial match
    return len(bundle.tests), failures


def run_tests(bundle: Bundle) -> tuple[int, list[str]]:
    """(number of tests run, failure messages)."""
    count, failures = check(bundle)
    return count, [f.message for f in failures]
