"""Fleet health as the console sees it: per-sensor figures from the stream, per-minute
counts, top rules, and the hub's own status file when the console can read it.

From the stream (works wherever the console runs): each sensor's host, version, last event,
event rate over the last minute, lag (arrival at the console minus the event's
``@timestamp``: sensor batching + transport + scoring + publishing) and its losses
(``sensor-loss`` events, kernel and send drops in its ``sensor-health`` counters). From the
hub's ``status.json`` (when the console runs in the hub or is given its state directory): the
hub's per-sensor counters (events in, bad input, duplicates, lost batches), the outputs with
their queue depth and errors, and the active bundle; the bundle history comes from the
bundle store.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from collections import Counter, deque
from typing import Any

from threatseer.common import ecs
from threatseer.hub.console.alerts import _number, _text, indicators

MINUTES = 60  # of the per-minute chart and the top-rules window
MAX_SENSORS = 10_000
RATE_WINDOW_S = 60
HEALTH_COUNTERS = ("kernel_lost", "send_dropped")


def parse_ts(value: Any) -> float | None:
    """Seconds since the epoch of an ECS ``@timestamp``, or None."""
    if not isinstance(value, str) or len(value) > 40:
        return None
    try:
        return dt.datetime.fromisoformat(value).timestamp()
    except ValueError:
        return None


class SensorSeen:
    """One sensor as seen in the stream."""

    __slots__ = ("agent", "host", "version", "first", "last", "events", "alerts", "lag",
                 "lag_max", "loss_events", "loss_batches", "health", "health_at", "slots")

    def __init__(self, agent: str) -> None:
        self.agent = agent
        self.host = self.version = ""
        self.first = self.last = 0.0
        self.events = self.alerts = 0
        self.lag: float | None = None
        self.lag_max = 0.0
        self.loss_events = self.loss_batches = 0
        self.health: dict[str, float] = {}
        self.health_at = 0.0
        self.slots = [[0, 0] for _ in range(RATE_WINDOW_S)]  # [second, events] per slot

    def count(self, second: int, n: int) -> None:
        slot = self.slots[second % RATE_WINDOW_S]
        if slot[0] != second:
            slot[0], slot[1] = second, 0
        slot[1] += n

    def rate(self, now: float) -> float:
        """Events per second over the last minute (or since first seen, if later)."""
        second = int(now)
        n = sum(c for s, c in self.slots if second - RATE_WINDOW_S < s <= second)
        span = min(RATE_WINDOW_S, max(1.0, now - self.first))
        return n / span

    def view(self, now: float) -> dict[str, Any]:
        lost = int(self.health.get("kernel_lost", 0)) + int(self.health.get("send_dropped", 0))
        return {"agent": self.agent, "host": self.host, "version": self.version,
                "first_seen": self.first, "last_seen": self.last,
                "idle_s": round(now - self.last, 1), "events": self.events,
                "alerts": self.alerts, "rate": round(self.rate(now), 2),
                "lag_s": None if self.lag is None else round(self.lag, 3),
                "lag_max_s": round(self.lag_max, 3), "loss_events": self.loss_events,
                "loss_batches": self.loss_batches, "dropped_counters": lost,
                "health": self.health, "health_age_s": (round(now - self.health_at, 1)
                                                        if self.health_at else None)}


class Fleet:
    def __init__(self) -> None:
        self.sensors: dict[str, SensorSeen] = {}
        # [minute, events, alerts, Counter(rule -> alerts)] for the last MINUTES minutes
        self.minutes: deque[list[Any]] = deque(maxlen=MINUTES)
        self.events = self.alerts = 0
        self.rules_total: Counter[str] = Counter()

    def _minute(self, now: float) -> list[Any]:
        minute = int(now // 60)
        if not self.minutes or self.minutes[-1][0] != minute:
            self.minutes.append([minute, 0, 0, Counter()])
        return self.minutes[-1]

    def observe(self, events: list[dict[str, Any]], now: float) -> None:
        """Count one published message's events (a message's events are usually one
        sensor's batch: the per-sensor work is done once per sensor per message)."""
        bucket = self._minute(now)
        second = int(now)
        per_agent: dict[str, int] = {}
        last_of: dict[str, dict[str, Any]] = {}
        n_alerts = 0
        for ev in events:
            agent = ev.get("agent.id")
            if not isinstance(agent, str):
                continue
            per_agent[agent] = per_agent.get(agent, 0) + 1
            last_of[agent] = ev
            action = ev.get("event.action")
            if ev.get("event.kind") == "alert":
                n_alerts += 1
                rules = bucket[3]
                for ind in indicators(ev):
                    rule = _text(ind.get("rule"), 120)
                    rules[rule] += 1
                    self.rules_total[rule] += 1
                s = self._sensor(agent, now)
                if s is not None:
                    s.alerts += 1
            if action == ecs.SENSOR_HEALTH or action == ecs.SENSOR_LOSS:
                self._health(agent, action, ev, now)
        n = len(events)
        bucket[1] += n
        bucket[2] += n_alerts
        self.events += n
        self.alerts += n_alerts
        for agent, count in per_agent.items():
            s = self._sensor(agent, now)
            if s is None:
                continue
            ev = last_of[agent]
            s.events += count
            s.last = now
            s.count(second, count)
            host, version = ev.get("host.name"), ev.get("agent.version")
            if isinstance(host, str) and host != s.host:
                s.host = _text(host, 120)
            if isinstance(version, str) and version != s.version:
                s.version = _text(version, 40)
            ts = parse_ts(ev.get("@timestamp"))
            if ts is not None and ev.get("event.action") != ecs.SENSOR_LOSS:
                s.lag = lag = max(0.0, now - ts)
                s.lag_max = max(s.lag_max * 0.98, lag)  # decays: recent peaks, not all-time

    def _sensor(self, agent: str, now: float) -> SensorSeen | None:
        s = self.sensors.get(agent)
        if s is None:
            if len(self.sensors) >= MAX_SENSORS:  # agent ids come from the wire: bounded
                oldest = min(self.sensors.values(), key=lambda x: x.last)
                del self.sensors[oldest.agent]
            s = self.sensors[agent] = SensorSeen(_text(agent, 120))
            s.first = now
        return s

    def _health(self, agent: str, action: str, ev: dict[str, Any], now: float) -> None:
        s = self._sensor(agent, now)
        if s is None:
            return
        if action == ecs.SENSOR_LOSS:
            s.loss_events += int(_number(ev.get("threatseer.loss.events")))
            s.loss_batches += int(_number(ev.get("threatseer.loss.batches")))
            return
        prefix = "threatseer.health."
        s.health = {k[len(prefix):]: v for k, v in ev.items()
                    if k.startswith(prefix) and isinstance(v, int | float)
                    and not k.endswith("_delta")}
        s.health_at = now

    def series(self, now: float) -> dict[str, list[int]]:
        """Events and alerts per minute for the last MINUTES minutes, oldest first."""
        current = int(now // 60)
        by_minute = {m[0]: m for m in self.minutes}
        minutes = list(range(current - MINUTES + 1, current + 1))
        return {"minutes": [m * 60 for m in minutes],
                "events": [by_minute[m][1] if m in by_minute else 0 for m in minutes],
                "alerts": [by_minute[m][2] if m in by_minute else 0 for m in minutes]}

    def top_rules(self, now: float, n: int = 10) -> list[dict[str, Any]]:
        """The rules with the most alerts in the last MINUTES minutes."""
        current = int(now // 60)
        total: Counter[str] = Counter()
        for m in self.minutes:
            if m[0] > current - MINUTES:
                total.update(m[3])
        return [{"rule": r, "hits": c} for r, c in total.most_common(n)]

    def view(self, now: float) -> list[dict[str, Any]]:
        return [s.view(now) for s in sorted(self.sensors.values(), key=lambda s: s.host)]


def read_status(state_dir: str) -> dict[str, Any] | None:
    """The hub's ``status.json`` in ``state_dir`` (written every 2 s), or None."""
    from threatseer.hub.daemon import STATUS_FILE

    try:
        with open(os.path.join(state_dir, STATUS_FILE)) as f:
            status = json.load(f)
    except (OSError, ValueError):
        return None
    return status if isinstance(status, dict) else None
