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
                failures.append(f"{test.source}: rule {test.rule!r} {what}: {shown}")
    finally:
        if isinstance(ruleset, IndexedRuleSet):
            ruleset.reset_sequences()  # the tested bundle starts live with no partial match
    return len(bundle.tests), failures
