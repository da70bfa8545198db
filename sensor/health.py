"""Sensor health events: the kernel's lost/filtered counters and the sensor's own, every N s.

Loss is never silent: besides the periodic health event, any interval in which records were
lost (ring buffer full) or batches dropped (hub unreachable and the queue full) also yields a
``sensor-loss`` event that says how many and why.
"""

from __future__ import annotations

import datetime as dt
import resource
import time
from typing import Any

from threatseer.common import ecs

Event = dict[str, Any]


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _event(action: str, fields: dict[str, Any]) -> Event:
    category, types = ecs.CATEGORIES[action]
    ev: Event = {
        "@timestamp": now_iso(),
        "event.kind": "metric" if action == ecs.SENSOR_HEALTH else "event",
        "event.category": category,
        "event.type": types,
        "event.action": action,
    }
    ev.update(fields)
    return ev


class HealthReporter:
    """Turns cumulative counters into health and loss events with per-interval deltas."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self._last: dict[str, int] = {}

    def report(self, counters: dict[str, int]) -> list[Event]:
        deltas = {k: v - self._last.get(k, 0) for k, v in counters.items()}
        self._last = dict(counters)
        fields: dict[str, Any] = {f"threatseer.health.{k}": v for k, v in counters.items()}
        fields.update({f"threatseer.health.{k}_delta": v for k, v in deltas.items()})
        fields["threatseer.health.uptime_s"] = round(time.monotonic() - self.started, 1)
        fields["threatseer.health.rss_kib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        events = [_event(ecs.SENSOR_HEALTH, fields)]
        for key, reason in (
            ("kernel_lost", "ring buffer full: records lost in the kernel"),
            ("send_dropped", "hub unreachable and spool full (on disk, or in memory while "
                             "the disk is full): oldest batches dropped"),
        ):
            if deltas.get(key, 0) > 0:
                events.append(_event(ecs.SENSOR_LOSS, {
                    "threatseer.loss.events": deltas[key],
                    "threatseer.loss.reason": reason,
                    "threatseer.loss.counter": key,
                }))
        return events
