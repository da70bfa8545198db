"""What every output needs from an event: its id, whether it is routed, its subject, its JSON.

The id is the de-duplication key everywhere (Elasticsearch ``_id``, Kafka header, a field in
Redis/Logstash/file lines): retries after a lost acknowledgement may send an event twice, and
the id makes the copies recognisable (Elasticsearch drops them itself).
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections import OrderedDict
from typing import Any

from .config import OutputConfig


class EventIds:
    """Gives events without ``event.id`` a deterministic one.

    Preferred: ``<agent.id>-<threatseer.batch.seq>-<position>``, where position
    counts the events of that batch in the order the hub emits them (so a replay of the same
    batch gets the same ids). Without sensor id and batch number: ``sha1-<hash of the event's
    canonical JSON>``, so identical re-sent events still collapse.
    """

    def __init__(self, remember_batches: int = 4096) -> None:
        self._positions: OrderedDict[tuple[Any, Any], int] = OrderedDict()
        self._remember = remember_batches
        self._lock = threading.Lock()

    def ensure(self, event: dict[str, Any]) -> str:
        eid = event.get("event.id")
        if isinstance(eid, str) and eid:
            return eid
        sid, seq = event.get("agent.id"), event.get("threatseer.batch.seq")
        if sid is not None and seq is not None:
            key = (sid, seq)
            with self._lock:
                pos = self._positions.pop(key, 0)
                self._positions[key] = pos + 1
                if len(self._positions) > self._remember:
                    self._positions.popitem(last=False)
            eid = f"{sid}-{seq}-{pos}"
        else:
            canonical = json.dumps(event, sort_keys=True, default=str).encode()
            eid = "sha1-" + hashlib.sha1(canonical).hexdigest()
        event["event.id"] = eid
        return eid


def routed(cfg: OutputConfig, event: dict[str, Any]) -> bool:
    """Does ``event`` go to the output ``cfg`` (score, kind and category filters)?"""
    score = event.get("event.risk_score", 0)
    if not isinstance(score, int | float):
        score = 0
    if score < cfg.min_score:
        return False
    if cfg.kinds and event.get("event.kind", "event") not in cfg.kinds:
        return False
    if cfg.categories:
        cats = event.get("event.category", ())
        if isinstance(cats, str):
            cats = (cats,)
        if not any(c in cfg.categories for c in cats):
            return False
    return True


def subject(event: dict[str, Any]) -> str:
    """Who the event is about: the container image, else host + executable (the Kafka key)."""
    image = event.get("container.image.name")
    if image:
        return str(image)
    host = event.get("host.name") or event.get("host.id") or ""
    exe = event.get("process.executable") or event.get("process.name") or ""
    return f"{host}:{exe}"


def to_text(event: dict[str, Any]) -> str:
    """One readable line: time, score, kind, action, host, who, and the indicators' rules."""
    who = (event.get("process.command_line") or event.get("process.executable")
           or event.get("file.path") or event.get("container.id") or "")
    what = [event.get("file.path"), event.get("destination.ip"), event.get("dns.question.name")]
    rules = [str(i.get("rule")) for i in event.get("threatseer.indicators") or ()
             if isinstance(i, dict)]
    parts = [
        str(event.get("@timestamp", "-")),
        f"score={event.get('event.risk_score', 0)}",
        str(event.get("event.kind", "event")),
        str(event.get("event.action", "-")),
        str(event.get("host.name", "-")),
        f"pid={event.get('process.pid', '-')}",
        str(who),
    ]
    parts += [str(w) for w in what if w and w != who]
    if rules:
        parts.append("rules=" + ",".join(rules))
    return " ".join(p for p in parts if p)
