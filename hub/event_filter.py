"""Which scored events a viewer wants: by host, rule, process name and score.

One small predicate shared by ``threatseer tap`` and anything else that shows a live stream
of the hub's events (a console): the same options mean the same thing everywhere. Topic
filters (kind, category, action) are not here: they are ZeroMQ subscription prefixes, applied
before an event is even received (docs/tap.md).
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any


def _matcher(patterns: Iterable[str]) -> re.Pattern[str] | None:
    """One regex for shell-style globs (``web-*``, ``nginx``), or None when no pattern."""
    pats = [p for p in patterns if p]
    if not pats:
        return None
    return re.compile("|".join(f"(?:{fnmatch.translate(p)})" for p in pats))


@dataclass(frozen=True)
class EventFilter:
    """Every given criterion must hold; within one, any pattern may match.

    - ``hosts``: globs over ``host.name`` (or ``agent.id`` when the event has no host name);
    - ``rules``: globs over the names of the rules that fired (``threatseer.indicators``);
    - ``processes``: globs over ``process.name`` (or the basename of ``process.executable``);
    - ``min_score``: ``event.risk_score`` at least this.
    """

    hosts: tuple[str, ...] = ()
    rules: tuple[str, ...] = ()
    processes: tuple[str, ...] = ()
    min_score: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "_hosts", _matcher(self.hosts))
        object.__setattr__(self, "_rules", _matcher(self.rules))
        object.__setattr__(self, "_processes", _matcher(self.processes))

    @property
    def empty(self) -> bool:
        return not (self.hosts or self.rules or self.processes) and self.min_score is None

    def matches(self, ev: dict[str, Any]) -> bool:
        if self.min_score is not None:
            score = ev.get("event.risk_score", 0)
            if not isinstance(score, int | float) or score < self.min_score:
                return False
        hosts: re.Pattern[str] | None = self._hosts  # type: ignore[attr-defined]
        if hosts is not None:
            host = ev.get("host.name") or ev.get("agent.id")
            if not isinstance(host, str) or not hosts.match(host):
                return False
        procs: re.Pattern[str] | None = self._processes  # type: ignore[attr-defined]
        if procs is not None:
            name = ev.get("process.name")
            if not isinstance(name, str) or not name:
                exe = ev.get("process.executable")
                name = exe.rsplit("/", 1)[-1] if isinstance(exe, str) else None
            if not name or not procs.match(name):
                return False
        rules: re.Pattern[str] | None = self._rules  # type: ignore[attr-defined]
        if rules is not None:
            fired = ev.get("threatseer.indicators")
            if not isinstance(fired, list) or not any(
                    isinstance(i, dict) and isinstance(i.get("rule"), str)
                    and rules.match(i["rule"]) for i in fired):
                return False
        return True
