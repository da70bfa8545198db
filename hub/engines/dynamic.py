"""Dynamic engine: the bundle's compiled query and Sigma rules (a ``RuleSet``).

The rule languages live in ``threatseer.hub.rules``; here is only their place in the pipeline.
A rule that raises on some event is counted and skipped for that event: one bad rule must not
stop the scoring of the fleet.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from threatseer.hub.rules.model import RuleSet

log = logging.getLogger("threatseer.hub.dynamic")


class DynamicEngine:
    name = "dynamic"

    def __init__(self, ruleset: RuleSet) -> None:
        self.ruleset = ruleset
        self.errors = 0
        self._last_log = 0.0

    def process(self, events: list[dict[str, Any]], now: float = 0.0) -> None:
        if not len(self.ruleset):
            return
        add = getattr(self.ruleset, "add_indicators", None)
        if add is not None:  # the indexed rule set loops over the batch itself
            add(events, self._failed)
            return
        match = getattr(self.ruleset, "match_dicts", None) or self._match_dicts
        for ev in events:
            try:
                found = match(ev)
            except Exception as exc:  # a rule bug: count it, keep scoring
                self._failed(exc)
                continue
            if found:
                ev["threatseer.indicators"].extend(found)

    def _failed(self, exc: Exception) -> None:
        self.errors += 1
        if time.monotonic() - self._last_log > 10:
            self._last_log = time.monotonic()
            log.warning("rule evaluation failed (%d so far): %s: %s",
                        self.errors, type(exc).__name__, exc)

    def _match_dicts(self, event: dict[str, Any]) -> list[dict[str, Any]]:
        """For rule sets with only ``match`` (the RuleSet protocol)."""
        return [i.as_dict() for i in self.ruleset.match(event)]
