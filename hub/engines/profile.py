"""Profile engine: learn what each subject normally does, then score departures from it.

The subject is the container image when the event comes from a container (every replica of an
image should behave alike), else the (host, executable) pair. During a subject's learning
window (``learn_seconds`` and ``learn_min_events``, both must pass) its behaviour is recorded:
executables and their argv shape, parent -> child pairs, outbound ports and address prefixes
(/24, /64), sensitive files opened. Afterwards each event is scored ``abnormal_score`` if it
shows anything new and ``normal_score`` if everything it shows was learned.

Hot path: all profiles live in a dict; new behaviour and counters are written to SQLite in one
transaction every ``flush_interval_s`` (see :meth:`ProfileEngine.maybe_flush`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from threatseer.hub.config import ProfileConfig
from threatseer.hub.engines._profile import (
    address_prefix,
    argv_shape,
    observations,
    observe,
    subject_kind,
    subject_of,
)
from threatseer.hub.indicators import Indicator
from threatseer.hub.profiles import ALL, Command, Profile, ProfileStore, ProfileWriter, Snapshot

__all__ = ["ProfileEngine", "address_prefix", "argv_shape", "observations", "subject_kind",
           "subject_of"]

ENGINE = "profile"
log = logging.getLogger("threatseer.hub.profile")


class ProfileEngine:
    name = ENGINE

    def __init__(self, store: ProfileStore, cfg: ProfileConfig, background: bool = False) -> None:
        """``background``: write to SQLite on a writer thread (the hub) instead of inline."""
        self.store = store
        self.cfg = cfg
        self.profiles: dict[str, Profile] = store.load_all()
        self._last_command = store.last_command()
        self._writer = ProfileWriter(store, cfg.flush_interval_s) if background else None
        self._dirty: dict[str, Profile] = {}
        self._new_items: list[tuple[str, str, float]] = []
        self._merged_items: list[tuple[str, str, float]] = []  # from other replicas
        # Called with the behaviour this engine learned in each process() call (a cluster
        # scorer publishes it to the other replicas: hub/cluster/replication.py).
        self.on_learn: Callable[[list[tuple[str, str, float]]], None] | None = None
        self._last_flush = 0.0
        self.errors = 0
        self._normal = Indicator(
            ENGINE, "profile", "normal_behavior", "behaviour seen while learning this subject",
            cfg.normal_score, ("profile",)).as_dict()
        # Filled in per event (description, extra_info, a fresh tags list) by process().
        self._abnormal = Indicator(ENGINE, "profile", "abnormal_behavior", "",
                                   cfg.abnormal_score, ("profile",)).as_dict()

    def process(self, events: list[dict[str, Any]], now: float) -> None:
        """Profile and score ``events`` (the loop is native: ``native/_profile.pyx``)."""
        cfg = self.cfg
        before = len(self._new_items)
        self.errors += observe(events, self.profiles, self._dirty, self._new_items, now,
                               cfg.learn_seconds, cfg.learn_min_events, self._normal,
                               self._abnormal)
        if self.on_learn is not None and len(self._new_items) > before:
            self.on_learn(self._new_items[before:])

    def changed(self) -> dict[str, Profile]:
        """The profiles touched since the last flush (subject -> profile)."""
        return self._dirty

    def merge(self, subject: str, first_seen: float, learned_at: float | None,
              items: list[tuple[str, float]]) -> Profile:
        """Union in what another replica knows of ``subject``: behaviour ``(item, first
        seen)`` is added, the learning window's start is the earliest, a subject learned
        anywhere is learned here. Grow-only and idempotent, so replicas merge in any order
        and a replayed observation changes nothing."""
        prof = self.profiles.get(subject)
        if prof is None:
            prof = self.profiles[subject] = Profile(subject, subject_kind(subject), first_seen)
        changed = False
        if first_seen < prof.first_seen:
            prof.first_seen, changed = first_seen, True
        if learned_at is not None and (not prof.learned or prof.learned_at is None
                                       or learned_at < prof.learned_at):
            prof.learned, prof.learned_at, changed = True, learned_at, True
        known = prof.items
        for item, ts in items:
            if item not in known:
                known.add(item)
                self._merged_items.append((subject, item, ts))
                changed = True
        if changed:
            self._dirty[subject] = prof
        return prof

    def maybe_flush(self, now: float) -> None:
        if now - self._last_flush >= self.cfg.flush_interval_s:
            self.flush(now)

    def flush(self, now: float) -> None:
        """Apply CLI commands, then hand what changed since the last flush to the writer."""
        self._last_flush = now
        writer = self._writer
        try:
            if writer is not None:
                while writer.inbox:
                    self._apply_command(writer.inbox.popleft())
            else:
                for cmd in self.store.commands_after(self._last_command):
                    self._apply_command(cmd)
            snap = Snapshot({s: p.row() for s, p in self._dirty.items()},
                            self._new_items + self._merged_items, self._last_command)
            self._dirty = {}
            self._new_items = []
            self._merged_items = []
            if writer is not None:
                writer.submit(snap)
            else:
                self.store.save(list(snap.rows.values()), snap.items)
        except Exception as exc:  # a locked or broken database must not stop scoring
            log.warning("profile flush failed: %s", exc)

    def close(self, now: float) -> None:
        """Final flush; returns when it is on disk."""
        self.flush(now)
        if self._writer is not None:
            self._writer.close()

    def _apply_command(self, cmd: Command) -> None:
        cmd_id, subject, op, at = cmd
        self._last_command = cmd_id
        self._apply(subject, op, at)

    def _apply(self, subject: str, op: str, at: float) -> None:
        targets = list(self.profiles) if subject == ALL else [subject]
        for s in targets:
            if op == "reset":
                self.profiles.pop(s, None)
                self._dirty.pop(s, None)
                self._new_items = [it for it in self._new_items if it[0] != s]
            elif op == "relearn" and s in self.profiles:
                prof = self.profiles[s]
                prof.learned, prof.learned_at, prof.events, prof.first_seen = False, None, 0, at
                self._dirty[s] = prof
