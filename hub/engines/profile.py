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

import ipaddress
import logging
from typing import Any

from threatseer.hub.argv_shape import argv_shape
from threatseer.hub.config import ProfileConfig
from threatseer.hub.indicators import Indicator
from threatseer.hub.profiles import ALL, Command, Profile, ProfileStore, ProfileWriter, Snapshot

ENGINE = "profile"
log = logging.getLogger("threatseer.hub.profile")

_prefix_cache: dict[str, str] = {}


def address_prefix(ip: str) -> str:
    """The /24 (IPv4) or /64 (IPv6) network of ``ip``, as text."""
    hit = _prefix_cache.get(ip)
    if hit is None:
        if ":" not in ip:
            hit = ip.rpartition(".")[0] + ".0/24"
        else:
            try:
                hit = str(ipaddress.ip_network(f"{ip}/64", strict=False))
            except ValueError:
                hit = ip
        if len(_prefix_cache) > 100_000:
            _prefix_cache.clear()
        _prefix_cache[ip] = hit
    return hit


def subject_of(ev: dict[str, Any]) -> tuple[str, str] | None:
    """``(subject, kind)`` of an event, or None when it names neither image nor executable."""
    image = ev.get("container.image.name")
    if image:
        return f"container:{image}", "container"
    exe = ev.get("process.executable")
    if exe:
        host = ev.get("host.name") or ev.get("threatseer.sensor.id") or "?"
        return f"host:{host}:{exe}", "host"
    return None


PROFILED = frozenset(("exec", "connect", "open"))


def observations(ev: dict[str, Any]) -> list[str] | None:
    """The behaviour an event shows, as ``kind\\tvalue`` strings (None: nothing to profile)."""
    action = ev["event.action"]
    if action == "exec":
        exe = ev["process.executable"]
        obs = [f"argv\t{exe} {argv_shape(ev['process.args'] or ())}"]
        if ev.get("container.image.name"):  # for (host, exe) subjects exe is the subject
            obs.append(f"exe\t{exe}")
        parent = ev.get("process.parent.executable")
        if parent:
            obs.append(f"parent\t{parent} > {exe}")
        return obs
    if action == "connect":
        ip = ev["destination.ip"]
        return [f"port\t{ev['network.transport']}/{ev['destination.port']}",
                f"net\t{address_prefix(ip) if isinstance(ip, str) else ip}"]
    if action == "open":
        return [f"file\t{argv_shape(str(ev['file.path']))}"]
    return None


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
        self._last_flush = 0.0
        self.errors = 0
        self._normal = Indicator(
            ENGINE, "profile", "normal_behavior", "behaviour seen while learning this subject",
            cfg.normal_score, ("profile",)).as_dict()
        # Filled in per event (description, extra_info, a fresh tags list) by process().
        self._abnormal = Indicator(ENGINE, "profile", "abnormal_behavior", "",
                                   cfg.abnormal_score, ("profile",)).as_dict()

    def process(self, events: list[dict[str, Any]], now: float) -> None:
        profiles, dirty, new_items = self.profiles, self._dirty, self._new_items
        learn_s, learn_n = self.cfg.learn_seconds, self.cfg.learn_min_events
        normal, abnormal = self._normal, self._abnormal
        for ev in events:
            if ev["event.action"] not in PROFILED:
                continue
            try:
                obs = observations(ev)
                subj = subject_of(ev) if obs else None
            except Exception:  # a field of an odd type: skip this event, never the batch
                self.errors += 1
                continue
            if subj is None:
                continue
            subject = subj[0]
            prof = profiles.get(subject)
            if prof is None:
                prof = profiles[subject] = Profile(subject, subj[1], now)
            if not prof.learned and prof.events >= learn_n and now - prof.first_seen >= learn_s:
                prof.learned = True  # the window closed before this event: score it
                prof.learned_at = now
            prof.events += 1
            prof.last_seen = now
            dirty[subject] = prof
            items = prof.items
            if not prof.learned:
                for item in obs:
                    if item not in items:
                        items.add(item)
                        new_items.append((subject, item, now))
                continue
            for item in obs:
                if item not in items:
                    break
            else:  # all learned: the common case, no list built
                ev["threatseer.indicators"].append(normal)
                continue
            ind = dict(abnormal)
            ind["description"] = f"{subject} did something it never did while learning"
            ind["extra_info"] = {"subject": subject, "new": [
                i.replace("\t", ": ", 1) for i in obs if i not in items]}
            ind["tags"] = ["profile"]
            ev["threatseer.indicators"].append(ind)

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
            snap = Snapshot({s: p.row() for s, p in self._dirty.items()}, self._new_items,
                            self._last_command)
            self._dirty = {}
            self._new_items = []
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
