"""The bundle's exec rules (enforce.yaml) as indicators, for execs no sensor kernel stopped.

A sensor whose kernel enforces the exec policy kills a denied exec itself, and the exec event
says so (``threatseer.enforce.verdict``: skipped here, the sensor's ``kill`` event tells the
rest). Where the kernel did not act (it refused the program, ``enforce_in_kernel: false``, a
sensor of an older version, a rule response.kill_rules does not allow), the exec is an alert
like any rule's, whatever ``actions.toss_below`` says, and hub/response.py kills it through the
hub-driven path when response.kill_rules allows the rule.
"""

from __future__ import annotations

from typing import Any

from threatseer.common import ecs
from threatseer.hub.indicators import Indicator
from threatseer.hub.rules.model import ExecRule

ENGINE = "static"
# An exec the bundle denies weighs like a known-bad indicator (hub/engines/static.py IOC_SCORE).
EXEC_RULE_SCORE = 100
VERDICT = "threatseer.enforce.verdict"


def kind_of(ev: dict[str, Any]) -> str:
    """The exec rule kind of an exec event's executable: memfd, deleted or any."""
    flags = ev.get("threatseer.exec.flags") or ()
    return "memfd" if "memfd" in flags else "deleted" if "deleted" in flags else "any"


def exec_rule_for(ev: dict[str, Any], rules: tuple[ExecRule, ...]) -> ExecRule | None:
    """The first exec rule an exec event falls under, or None."""
    exe = ev.get("process.executable")
    if not isinstance(exe, str):
        return None
    kind = kind_of(ev)
    for er in rules:
        if ("any" in er.kinds or kind in er.kinds) and exe.startswith(er.prefixes):
            return er
    return None


class ExecRuleEngine:
    name = ENGINE

    def __init__(self, rules: tuple[ExecRule, ...]) -> None:
        self.rules = rules
        self.indicators = {
            er.name: Indicator(ENGINE, er.name, "exec_rule", er.description or er.name,
                               EXEC_RULE_SCORE, ("response",),
                               {"prefixes": list(er.prefixes), "kinds": list(er.kinds)}
                               ).as_dict()
            for er in rules}

    def process(self, events: list[dict[str, Any]]) -> None:
        """Add an exec rule's indicator to each exec the kernel let run that one denies."""
        rules, exec_action = self.rules, ecs.EXEC
        if not rules:
            return
        for ev in events:
            if ev.get("event.action") != exec_action or VERDICT in ev:
                continue
            er = exec_rule_for(ev, rules)
            if er is not None:
                ind = self.indicators[er.name]
                ev["threatseer.indicators"].append({**ind, "extra_info": dict(ind["extra_info"])})
