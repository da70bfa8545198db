"""The scoring pipeline: static -> dynamic -> profile -> score -> action.

Each stage runs over a whole batch (one call per engine per batch, timed per engine). The
active rules are one attribute (:attr:`Pipeline.rules`), read once per batch: a bundle swap
from the admin thread is atomic between batches and never drops or half-scores an event.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from threatseer.common import ecs
from threatseer.hub import alerts
from threatseer.hub._batch import prepare, tally
from threatseer.hub.config import ActionConfig
from threatseer.hub.engines.dynamic import DynamicEngine
from threatseer.hub.engines.profile import ProfileEngine
from threatseer.hub.engines.static import StaticEngine
from threatseer.hub.rules.model import Bundle, Manifest

TOSS, LOG, ALERT = "toss", "log", "alert"
EMPTY_BUNDLE = Bundle(Manifest(name="none", version="0"))


class CompiledRules:
    """The engines built from one bundle (indexes are built here, off the hot path)."""

    def __init__(self, bundle: Bundle) -> None:
        self.bundle = bundle
        self.static = StaticEngine(bundle.static)
        self.dynamic = DynamicEngine(bundle.ruleset)
        by_name = getattr(bundle.ruleset, "by_name", {})
        self.rule_meta = lambda name: (r.meta if (r := by_name.get(name)) else None)


@dataclass
class BatchResult:
    emitted: list[dict[str, Any]]
    tossed: int = 0
    logged: int = 0
    alerted: int = 0


class Pipeline:
    def __init__(self, actions: ActionConfig, bundle: Bundle | None = None,
                 profile: ProfileEngine | None = None) -> None:
        self.actions = actions
        self.rules = CompiledRules(bundle or EMPTY_BUNDLE)
        self.profile = profile
        self.engine_seconds = {"static": 0.0, "dynamic": 0.0, "profile": 0.0, "score": 0.0}

    def activate(self, bundle: Bundle) -> None:
        """Swap in a new bundle (compiled first, then one attribute store)."""
        self.rules = CompiledRules(bundle)

    def score(self, events: list[dict[str, Any]], sensor_id: str, seq: int,
              now: float | None = None) -> BatchResult:
        """Score one batch of schema-checked flat events in place; return what to emit."""
        rules = self.rules  # once per batch: see module docstring
        now = time.time() if now is None else now
        prepare(events, sensor_id, seq)  # indicators [], sensor id, batch seq (in C)
        secs = self.engine_seconds
        t0 = time.perf_counter()
        rules.static.process(events, now)
        t1 = time.perf_counter()
        rules.dynamic.process(events, now)
        t2 = time.perf_counter()
        if self.profile is not None:
            self.profile.process(events, now)
        t3 = time.perf_counter()
        toss_below, alert_at = self.actions.toss_below, self.actions.alert_at
        result = BatchResult([])
        # event.risk_score = the indicators' sum; below toss_below: dropped; from alert_at
        # on: threatseer.action and event.kind "alert"; else action "log" and the kind of
        # the action ("metric" for health, else "event"): the hub owns event.kind (in C).
        tossed, alerted = tally(events, toss_below, alert_at, LOG, ALERT, result.emitted,
                                ecs.EVENT_KINDS, "event")
        if alerted:  # rule.*, threat.*, message: on alerts only (hub/alerts.py)
            manifest = rules.bundle.manifest
            for ev in result.emitted:
                if ev["threatseer.action"] == ALERT:
                    alerts.describe(ev, rules.rule_meta, manifest.name, manifest.version)
        t4 = time.perf_counter()
        secs["static"] += t1 - t0
        secs["dynamic"] += t2 - t1
        secs["profile"] += t3 - t2
        secs["score"] += t4 - t3
        result.tossed, result.alerted = tossed, alerted
        result.logged = len(result.emitted) - alerted
        return result
