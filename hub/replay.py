"""``threatseer replay``: score recorded events offline, through the same engines as the hub.

The way to backtest a bundle: the events of a JSONL file (nested ECS documents as the outputs
write them, or flat dotted keys) are checked, scored and printed as JSON lines. Profile time is
taken from each event's ``@timestamp`` so learning windows behave as they did live.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator
from datetime import datetime
from typing import Any, TextIO

from threatseer.common import ecs
from threatseer.hub.config import ActionConfig, ProfileConfig
from threatseer.hub.engines.profile import ProfileEngine
from threatseer.hub.profiles import ProfileStore
from threatseer.hub.rules.model import Bundle
from threatseer.hub.scoring import Pipeline
from threatseer.hub.validate import problems

log = logging.getLogger("threatseer.hub.replay")
REPLAY_SENSOR = "replay"


def read_events(lines: TextIO) -> Iterator[tuple[int, dict[str, Any] | None, str]]:
    """``(line number, flat event or None, problem)`` for each non-empty line."""
    for n, line in enumerate(lines, 1):
        line = line.strip()
        if not line:
            continue
        try:
            doc = json.loads(line)
        except ValueError as exc:
            yield n, None, f"not JSON ({exc.msg})"
            continue
        if not isinstance(doc, dict):
            yield n, None, "not a JSON object"
            continue
        yield n, ecs.flatten(doc), ""


def event_time(ev: dict[str, Any], fallback: float) -> float:
    ts = ev.get("@timestamp")
    if isinstance(ts, str):
        try:
            return datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()
        except ValueError:
            pass
    return fallback


def replay(lines: TextIO, out: TextIO, bundle: Bundle | None, profiles_db: str | None,
           actions: ActionConfig, profile_cfg: ProfileConfig, include_tossed: bool = False,
           source: str = "<stdin>") -> dict[str, int]:
    store = ProfileStore(profiles_db or ":memory:")
    profile = ProfileEngine(store, profile_cfg) if profile_cfg.enabled else None
    pipeline = Pipeline(actions, bundle, profile)
    counts = {"read": 0, "bad": 0, "tossed": 0, "emitted": 0}
    now = 0.0
    try:
        for n, ev, problem in read_events(lines):
            counts["read"] += 1
            if ev is not None:
                bad = problems([ev])
                if bad:
                    problem = bad[0][1]
            if ev is None or problem:
                counts["bad"] += 1
                print(f"threatseer replay: {source}:{n}: {problem}", file=sys.stderr)
                continue
            now = event_time(ev, now)
            res = pipeline.score([ev], REPLAY_SENSOR, n, now)
            counts["tossed"] += res.tossed
            if not res.emitted and include_tossed:
                ev["threatseer.action"] = "toss"
                res.emitted.append(ev)
            for e in res.emitted:
                out.write(ecs.to_json(e) + "\n")
                counts["emitted"] += 1
        if profile is not None:
            profile.close(now)
    finally:
        store.close()
    return counts
