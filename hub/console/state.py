"""What the console knows, fed message by message from the PUB stream, and the live
listeners (one per open stream) that new alerts are handed to.

Everything here runs on the console's event loop thread: no locks.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections import deque
from typing import Any

from threatseer.hub.console.alerts import AlertFilter, AlertRing, Held, notable
from threatseer.hub.console.config import ConsoleConfig
from threatseer.hub.console.fleet import Fleet
from threatseer.hub.console.tree import ProcessTree

LISTENER_QUEUE = 5000  # alerts a slow stream may fall behind by before the oldest are dropped


def summary_json(h: Held) -> bytes:
    """The summary of ``h`` as JSON, encoded once however many streams send it."""
    cached = h.summary.get("_json")
    if cached is None:
        cached = json.dumps({k: v for k, v in h.summary.items() if k != "_json"},
                            separators=(",", ":"), default=str).encode()
        h.summary["_json"] = cached
    return cached


class Listener:
    """One open live stream: the alerts that match its filter, waiting to be sent."""

    def __init__(self, flt: AlertFilter) -> None:
        self.filter = flt
        self.queue: deque[Held] = deque(maxlen=LISTENER_QUEUE)
        self.dropped = 0
        self.wake = asyncio.Event()

    def offer(self, helds: list[Held]) -> None:
        matches = self.filter.matches
        queue = self.queue
        added = False
        for h in helds:
            if matches(h):
                if len(queue) == LISTENER_QUEUE:
                    self.dropped += 1
                queue.append(h)
                added = True
        if added:
            self.wake.set()

    def take(self) -> list[Held]:
        out = list(self.queue)
        self.queue.clear()
        self.wake.clear()
        return out


class ConsoleState:
    def __init__(self, cfg: ConsoleConfig) -> None:
        self.cfg = cfg
        self.instance = os.urandom(6).hex()  # tells a browser the console was restarted
        self.started = time.time()
        self.alerts = AlertRing(cfg.alerts_kept)
        self.tree = ProcessTree(cfg.tree_window_s, cfg.tree_max_processes,
                                cfg.tree_events_per_process)
        self.fleet = Fleet()
        self.listeners: set[Listener] = set()
        self.messages = 0
        self.bad_messages = 0
        self.last_message = 0.0

    def ingest(self, events: list[Any], now: float) -> list[Held]:
        """Take one published message's events; hand the new held alerts to the listeners."""
        self.messages += 1
        self.last_message = now
        ring, note = self.alerts, self.tree.note
        helds: list[Held] = []
        good: list[dict[str, Any]] = []
        for ev in events:
            if not isinstance(ev, dict):
                continue
            good.append(ev)
            seq = 0
            if notable(ev):
                h = ring.add(ev, now)
                if h is not None:
                    helds.append(h)
                    seq = h.seq
            try:
                note(ev, now, seq)
            except Exception:  # odd field types from a sensor: the tree skips that event
                self.bad_messages += 1
        self.fleet.observe(good, now)
        if helds:
            for listener in self.listeners:
                listener.offer(helds)
        return helds
