"""Sequence rules: events in order, sharing join values, within a time window.

``sequence by process.parent.entity_id within 60s [A] [B] [C]`` fires on the event that
completes the chain: an event matching C whose join values equal those of an earlier B,
which followed an A, the three within 60 seconds (event time, ``@timestamp``). Each step may
join on fields of its own (``[connect] by process.entity_id [exec of a shell] by
process.parent.entity_id``: the shell's parent is the process that connected) and may need
``runs`` matches (with ``distinct``: that many different values, e.g. destination ports).

Evaluation is EQL's: per step, the latest partial match of each join key; an event matching
step *i* advances the partial of step *i - 1* with its key (steps are tried last to first, so
one event never advances a sequence twice). ``sample`` (EQL's unordered form) keeps, per join
key, which steps have matched so far, and fires when all have, in any order (the two execs of
``curl | sh`` race). Steps are ordinary rules in the bundle's index
(:class:`SequenceStep`), so only events that can match a step reach this module.

State is bounded: join keys include the sensor (``agent.id``), partial matches expire after
the window, and each sequence keeps at most :data:`MAX_KEYS` partial matches, of which one
sensor may hold at most :data:`MAX_KEYS_PER_AGENT` (a sensor flooding a step evicts only its
own oldest partial matches). State lives with the compiled bundle: a bundle swap starts
afresh.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from threatseer.hub.indicators import Indicator
from threatseer.hub.rules.query.ast import Field, Sequence
from threatseer.hub.rules.query.compiler import as_str
from threatseer.hub.rules.ruleset import CompiledRule, render

MAX_KEYS = 65_536
MAX_KEYS_PER_AGENT = 4_096
MAX_TRAIL = 8  # events a fired indicator describes


_DAYS: dict[str, float] = {}  # "YYYY-MM-DD" -> epoch seconds of its midnight (UTC)


def event_time(ev: dict[str, Any]) -> float:
    """Seconds of the event's ``@timestamp`` (0.0 when absent or unreadable).

    The sensor's form (``2024-01-01T12:34:56.123456Z``) is read from its digits, the day
    looked up once: this runs for every event that matches a step."""
    ts = ev.get("@timestamp")
    if ts.__class__ is str:
        if len(ts) >= 20 and ts[10] == "T" and ts[-1] == "Z" and ts[13] == ts[16] == ":":  # type: ignore[index]
            day = _DAYS.get(ts[:10])  # type: ignore[index]
            if day is None:
                try:
                    day = datetime.fromisoformat(ts[:10] + "T00:00:00+00:00").timestamp()  # type: ignore[index,operator]
                except ValueError:
                    return 0.0
                if len(_DAYS) > 1024:
                    _DAYS.clear()
                _DAYS[ts[:10]] = day  # type: ignore[index]
            try:
                return (day + int(ts[11:13]) * 3600 + int(ts[14:16]) * 60  # type: ignore[index]
                        + float(ts[17:-1]))  # type: ignore[index]
            except ValueError:
                return 0.0
        try:
            return datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()  # type: ignore[union-attr]
        except ValueError:
            return 0.0
    if isinstance(ts, int | float):
        return float(ts)
    return 0.0


def _value(ev: dict[str, Any], f: Field) -> Any:
    v = ev.get(f.name)
    if f.index is not None:
        return v[f.index] if isinstance(v, list) and len(v) > f.index else None
    return tuple(v) if isinstance(v, list) else v


def _describe(ev: dict[str, Any]) -> str:
    what = (ev.get("process.command_line") or ev.get("file.path") or ev.get("dns.question.name")
            or ev.get("destination.ip") or ev.get("process.name") or "")
    text = f"{ev.get('event.action')} {as_str(what)}"
    return text if len(text) <= 200 else text[:197] + "..."


@dataclass
class _Partial:
    """A sequence matched up to some step: when it started, the runs of the current step,
    and what the matched events were (``sample``: the runs of each step, in ``done``)."""

    start: float
    runs: int = 1
    seen: set[Any] | None = None
    trail: list[str] = field(default_factory=list)
    done: dict[int, int] | None = None


class SequenceRule:
    """One sequence's definition and its state (see the module docstring)."""

    def __init__(self, name: str, sequence: Sequence, description: str, score: int,
                 tags: tuple[str, ...], output: str, source: str, action: str = "") -> None:
        self.name = name
        # the response to a completed sequence: the process of the event that completes it
        self.action = action
        self.sequence = sequence
        self.within = sequence.within
        self.description = description
        self.score = score
        self.tags = tags
        self.output = output
        self.source = source
        self.steps = sequence.steps
        self.last = len(self.steps) - 1
        # stage i: join key -> the partial match that has completed step i
        self.stages: list[OrderedDict[Any, _Partial]] = []
        self.per_agent: dict[Any, int] = {}
        self.count = 0
        self.fired = 0
        self.evicted = 0
        self.lock = threading.Lock()  # `rules test` of a new bundle vs its first batches
        self.reset()

    def reset(self) -> None:
        with getattr(self, "lock", threading.Lock()):
            self.stages = [OrderedDict() for _ in self.steps]
            self.per_agent = {}
            self.count = 0

    def key(self, step: int, ev: dict[str, Any]) -> tuple[Any, ...] | None:
        values = [ev.get("agent.id")]
        for f in self.steps[step].by:
            v = _value(ev, f)
            if v is None or v == "":
                return None
            values.append(v)
        return tuple(values)

    def may_advance(self, step: int, ev: dict[str, Any]) -> bool:
        """False when :meth:`observe` of ``step`` would surely ignore ``ev``, whatever the
        step's condition says: a join value is missing (no key), or the sequence is ordered,
        ``step`` is not its first and no partial match exists at all (nothing to advance, and
        nothing to expire). The hub asks this before evaluating the step's condition, so the
        steps after the first cost one attribute read while their sequence is idle."""
        if step and not self.count and self.sequence.ordered:
            return False
        for f in self.steps[step].by:
            v = _value(ev, f)
            if v is None or v == "":
                return False
        return True

    # ---- state ----------------------------------------------------------------------
    def _drop(self, stage: int, key: tuple[Any, ...]) -> None:
        if self.stages[stage].pop(key, None) is not None:
            self._forget(key[0])

    def _forget(self, agent: Any) -> None:
        self.count -= 1
        left = self.per_agent.get(agent, 1) - 1
        if left > 0:
            self.per_agent[agent] = left
        else:
            self.per_agent.pop(agent, None)

    def _put(self, stage: int, key: tuple[Any, ...], partial: _Partial, now: float) -> None:
        table = self.stages[stage]
        if key in table:
            table[key] = partial
            table.move_to_end(key)
            return
        agent = key[0]
        if self.per_agent.get(agent, 0) >= MAX_KEYS_PER_AGENT:
            self._evict(lambda k: k[0] == agent, now)
        if self.count >= MAX_KEYS:
            self._evict(lambda k: True, now)
        table[key] = partial
        self.count += 1
        self.per_agent[agent] = self.per_agent.get(agent, 0) + 1

    def _evict(self, which: Any, now: float) -> None:
        """Drop the oldest partial match (of the keys ``which`` accepts), expired ones first."""
        oldest: tuple[int, Any, float] | None = None
        for i, table in enumerate(self.stages):
            for key, partial in table.items():  # oldest first
                if which(key):
                    if oldest is None or partial.start < oldest[2]:
                        oldest = (i, key, partial.start)
                    break
        if oldest is not None:
            self._drop(oldest[0], oldest[1])
            self.evicted += 1

    def _expire(self, now: float) -> None:
        horizon = now - self.within
        for i, table in enumerate(self.stages):
            while table:
                key, partial = next(iter(table.items()))
                if partial.start >= horizon:
                    break
                self._drop(i, key)

    # ---- evaluation -----------------------------------------------------------------
    def observe(self, step: int, ev: dict[str, Any]) -> dict[str, Any] | None:
        """``ev`` matched ``step``'s condition: advance the state; the sequence's indicator
        when ``ev`` completes it, else None."""
        key = self.key(step, ev)
        if key is None:
            return None
        now = event_time(ev)
        with self.lock:
            self._expire(now)
            if not self.sequence.ordered:
                return self._sample(step, key, ev, now)
            spec = self.steps[step]
            partial: _Partial | None
            if step == 0:
                partial = self.stages[0].get(key) if spec.runs > 1 else None
                if partial is None:
                    partial = _Partial(now, 0, set() if spec.distinct else None)
            else:
                prev = self.stages[step - 1].get(key)
                current = self.stages[step].get(key) if spec.runs > 1 else None
                if current is not None and current.runs < spec.runs:
                    partial = current
                elif prev is not None and prev.runs >= self.steps[step - 1].runs:
                    self._drop(step - 1, key)
                    partial = _Partial(prev.start, 0, set() if spec.distinct else None,
                                       prev.trail)
                else:
                    return None
            if now - partial.start > self.within:
                self._drop(step, key)
                if step:
                    return None
                partial = _Partial(now, 0, set() if spec.distinct else None)
            if spec.distinct is not None:
                value = _value(ev, spec.distinct)
                if value in partial.seen:  # type: ignore[operator]
                    self._put(step, key, partial, now)
                    return None
                if len(partial.seen) < spec.runs:  # type: ignore[arg-type]
                    partial.seen.add(value)  # type: ignore[union-attr]
            partial.runs += 1
            if len(partial.trail) < MAX_TRAIL:
                partial.trail = [*partial.trail, _describe(ev)]
            if step == self.last and partial.runs >= spec.runs:
                self._drop(step, key)
                self.fired += 1
                return self._indicator(ev, partial, now)
            self._put(step, key, partial, now)
            return None

    def _sample(self, step: int, key: tuple[Any, ...], ev: dict[str, Any],
                now: float) -> dict[str, Any] | None:
        """The unordered form: one partial per key (in stage 0) counting each step's runs;
        a step's repeated distinct value does not count."""
        spec = self.steps[step]
        partial = self.stages[0].get(key)
        if partial is None or now - partial.start > self.within:
            if partial is not None:
                self._drop(0, key)
            partial = _Partial(now, 0, set() if spec.distinct else None, [], {})
        done = partial.done if partial.done is not None else {}
        if done.get(step, 0) >= spec.runs:
            self._put(0, key, partial, now)
            return None
        if spec.distinct is not None:
            value = (step, _value(ev, spec.distinct))
            if partial.seen is None:
                partial.seen = set()
            if value in partial.seen:
                self._put(0, key, partial, now)
                return None
            partial.seen.add(value)
        done[step] = done.get(step, 0) + 1
        partial.done = done
        if len(partial.trail) < MAX_TRAIL:
            partial.trail = [*partial.trail, _describe(ev)]
        if all(done.get(i, 0) >= s.runs for i, s in enumerate(self.steps)):
            self._drop(0, key)
            self.fired += 1
            return self._indicator(ev, partial, now)
        self._put(0, key, partial, now)
        return None

    def _indicator(self, ev: dict[str, Any], partial: _Partial, now: float) -> dict[str, Any]:
        extra: dict[str, Any] = {"sequence": partial.trail, "seconds": round(now - partial.start, 3)}
        if self.output:
            extra["output"] = render(self.output, ev)
        ind = Indicator("dynamic", self.name, "sequence", self.description, self.score,
                        self.tags, extra).as_dict()
        ind["tags"] = list(self.tags)
        return ind


@dataclass(eq=False)
class SequenceStep(CompiledRule):
    """Step ``index`` of ``sequence``, filed in the rule index like any rule: its events go to
    :meth:`SequenceRule.observe`, which returns an indicator only when the sequence
    completes."""

    sequence: SequenceRule | None = None
    index: int = 0

    def indicator_dict(self, event: dict[str, Any]) -> dict[str, Any] | None:  # type: ignore[override]
        return self.sequence.observe(self.index, event)  # type: ignore[union-attr]

    def indicator(self, event: dict[str, Any]) -> Indicator | None:  # type: ignore[override]
        ind = self.indicator_dict(event)
        if ind is None:
            return None
        return Indicator(ind["engine"], ind["rule"], ind["type"], ind["description"],
                         ind["score"], tuple(ind["tags"]), ind["extra_info"])
