"""What an engine says about an event: an indicator, with the score it adds.

Every engine appends these to the event's ``threatseer.indicators`` list; the event's
``event.risk_score`` is the sum of their scores.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class Indicator:
    engine: str  # "static", "dynamic", "sigma", "profile"
    rule: str  # the rule or list entry that fired
    type: str  # e.g. "risky_process", "sensitive_file", "ioc", "query", "abnormal_behavior"
    description: str
    score: int
    tags: tuple[str, ...] = ()
    extra_info: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "engine": self.engine,
            "rule": self.rule,
            "type": self.type,
            "description": self.description,
            "extra_info": self.extra_info,
            "score": self.score,
            "tags": list(self.tags),
        }
