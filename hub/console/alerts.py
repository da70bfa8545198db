"""Alerts held for the console: a bounded ring, their one-line summaries and the filters.

What is held: every alert (``event.kind: alert``), and the scored events below the alert
threshold (``risk_score > 0``) and losses, so the "event" kind filter has something to show.
Each is kept as its packed msgpack (the detail page decodes it again) beside a small summary
that the list, the live stream and the filters use, so 10,000 held alerts cost a few MiB.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import msgspec

from threatseer.common import ecs
from threatseer.hub.event_filter import EventFilter

KINDS = ("alert", "event", "any")
MAX_FILTER_LEN = 200
TEXT_MAX = 240  # characters of a command line or path in a summary

_pack = msgspec.msgpack.Encoder(enc_hook=str).encode
_unpack = msgspec.msgpack.Decoder().decode


def _text(value: Any, limit: int = TEXT_MAX) -> str:
    if value is None:
        return ""
    s = value if isinstance(value, str) else str(value)
    return s if len(s) <= limit else s[:limit - 1] + "…"


def _number(value: Any) -> float:
    return value if isinstance(value, int | float) and not isinstance(value, bool) else 0


def notable(ev: dict[str, Any]) -> bool:
    """Whether the console holds ``ev``: alerts, scored events, losses."""
    return (ev.get("event.kind") == "alert" or _number(ev.get("event.risk_score")) > 0
            or ev.get("event.action") == ecs.SENSOR_LOSS)


def what(ev: dict[str, Any]) -> str:
    """The object of the action: a path, an address, a name, or the command line."""
    action = ev.get("event.action")
    if action in ("connect", "listen"):
        return f"{_text(ev.get('destination.ip'))}:{_text(ev.get('destination.port'))}"
    if action == "accept":
        return f"{_text(ev.get('source.ip'))}:{_text(ev.get('source.port'))}"
    for key in ("file.path", "dns.question.name", "threatseer.loss.reason", "container.id"):
        if ev.get(key) is not None:
            return _text(ev[key])
    return _text(ev.get("process.command_line"))


def indicators(ev: dict[str, Any]) -> list[dict[str, Any]]:
    found = ev.get("threatseer.indicators")
    return [i for i in found if isinstance(i, dict)] if isinstance(found, list) else []


@dataclass(slots=True)
class Held:
    """One held alert: its console sequence number, when it arrived, its packed event, its
    summary and the few fields the filters look at (``view``, flat like an event)."""

    seq: int
    received: float
    packed: bytes
    summary: dict[str, Any]
    view: dict[str, Any]
    score: float
    kind: str  # "alert" or "event"

    def event(self) -> dict[str, Any]:
        return _unpack(self.packed)


_VIEW_FIELDS = ("host.name", "agent.id", "process.name", "process.executable",
                "event.risk_score")


def filter_view(ev: dict[str, Any]) -> dict[str, Any]:
    """The fields of ``ev`` an :class:`EventFilter` reads (rules by name only)."""
    view = {k: ev[k] for k in _VIEW_FIELDS if k in ev}
    view["threatseer.indicators"] = [{"rule": i.get("rule")} for i in indicators(ev)]
    return view


def summarize(ev: dict[str, Any], seq: int, received: float) -> dict[str, Any]:
    """What a row of the live list shows (and what the stream sends)."""
    inds = indicators(ev)
    rules = [_text(i.get("rule"), 120) for i in inds]
    summary: dict[str, Any] = {
        "seq": seq,
        "id": _text(ev.get("event.id"), 120),
        "ts": _text(ev.get("@timestamp"), 40),
        "received": round(received, 3),
        "kind": _text(ev.get("event.kind"), 20),
        "action": _text(ev.get("event.action"), 40),
        "score": _number(ev.get("event.risk_score")),
        "host": _text(ev.get("host.name") or ev.get("agent.id"), 120),
        "agent": _text(ev.get("agent.id"), 80),
        "process": _text(ev.get("process.name")
                         or (ev.get("process.executable") or "").rpartition("/")[2], 80),
        "pid": ev.get("process.pid") if isinstance(ev.get("process.pid"), int) else None,
        "what": what(ev),
        "rules": rules[:8],
    }
    # What the hub says of an alert for Kibana's views (rule.*, threat.*, message).
    for key, name in (("message", "message"), ("rule.name", "rule_name"),
                      ("threat.tactic.name", "tactic"), ("threat.technique.id", "technique"),
                      ("threat.technique.subtechnique.id", "subtechnique")):
        value = ev.get(key)
        if isinstance(value, list):
            value = ", ".join(_text(v, 80) for v in value[:10])
        if value is not None and value != "":
            summary[name] = _text(value, 200)
    return summary


def _patterns(q: Mapping[str, str], name: str) -> tuple[str, ...]:
    raw = q.get(name, "").strip()
    if len(raw) > MAX_FILTER_LEN:
        raise ValueError(f"{name}: at most {MAX_FILTER_LEN} characters")
    return tuple(p.strip() for p in raw.split(",") if p.strip())


@dataclass(frozen=True)
class AlertFilter:
    """The list's filters: host, rule and process are the tap's (:class:`EventFilter`:
    shell globs such as ``web-*``, several separated by commas, over the host name, the
    rules that fired and the process name), then a minimum score and the kind: alert
    (default), event (scored below the alert threshold) or any."""

    events: EventFilter = EventFilter()
    kind: str = "alert"

    @classmethod
    def from_query(cls, q: Mapping[str, str]) -> AlertFilter:
        """From URL query parameters; ValueError with a message for the user."""
        raw = q.get("min_score", "").strip()
        try:
            min_score = float(raw) if raw else None
        except ValueError:
            raise ValueError("min_score: not a number") from None
        kind = q.get("kind", "alert") or "alert"
        if kind not in KINDS:
            raise ValueError(f"kind: one of {', '.join(KINDS)}")
        return cls(EventFilter(_patterns(q, "host"), _patterns(q, "rule"),
                               _patterns(q, "process"), min_score), kind)  # type: ignore[arg-type]

    def matches(self, h: Held) -> bool:
        if self.kind != "any" and h.kind != self.kind:
            return False
        return self.events.empty or self.events.matches(h.view)


class AlertRing:
    """The newest ``size`` held alerts, numbered from 1 in arrival order."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.ring: deque[Held] = deque(maxlen=size)
        self.last_seq = 0
        self.unpackable = 0

    def add(self, ev: dict[str, Any], received: float) -> Held | None:
        try:
            packed = _pack(ev)
        except Exception:  # a value msgpack cannot hold (e.g. a huge integer): not held
            self.unpackable += 1
            return None
        self.last_seq += 1
        summary = summarize(ev, self.last_seq, received)
        held = Held(self.last_seq, received, packed, summary, filter_view(ev),
                    summary["score"], "alert" if summary["kind"] == "alert" else "event")
        self.ring.append(held)
        return held

    def get(self, seq: int) -> Held | None:
        if not self.ring:
            return None
        i = seq - self.ring[0].seq
        if 0 <= i < len(self.ring):
            return self.ring[i]
        return None

    def newest(self, flt: AlertFilter, limit: int, before: int | None = None,
               after: int = 0) -> list[Held]:
        """Up to ``limit`` matching alerts, newest first, with ``after < seq < before``."""
        out: list[Held] = []
        for h in self._backwards(before):
            if h.seq <= after:
                break
            if flt.matches(h):
                out.append(h)
                if len(out) >= limit:
                    break
        return out

    def _backwards(self, before: int | None) -> Iterator[Held]:
        ring = self.ring
        if before is None or not ring:
            yield from reversed(ring)
            return
        end = min(len(ring), max(0, before - ring[0].seq))
        yield from itertools.islice(reversed(ring), len(ring) - end, None)

    def __len__(self) -> int:
        return len(self.ring)
