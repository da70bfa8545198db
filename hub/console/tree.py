"""The process trees behind alerts, from the events the console has seen.

Every published event of a process (``process.entity_id``) is noted: exec and fork name the
process and its parent (``process.parent.entity_id``), exit ends it, and everything else
(file, network, privilege, ...) is its activity. Memory is bounded three ways: processes not
active for ``window_s`` are forgotten, at most ``max_processes`` are kept (the least recently
active go first), and each keeps its last ``events_per_process`` events as short tuples.

A parent first seen only as a child's ``process.parent.*`` fields becomes a stub (``seen``
false); beyond the oldest known ancestor the tree continues with the names the sensor gave in
``threatseer.ancestors``. So an alert's tree shows its ancestry even for a shell started
before the sensor, and the activity of each process the hub did see.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from typing import Any

from threatseer.common import ecs
from threatseer.hub.console.alerts import TEXT_MAX, _number, _text, what

MAX_CHILDREN = 64  # child ids remembered per process
MAX_SIBLINGS = 20  # other children shown beside each ancestor on the path
MAX_DESCENDANTS = 100  # descendants of the alert's process shown
MAX_DEPTH = 64
EXEC, FORK, EXIT = ecs.EXEC, ecs.FORK, ecs.EXIT

# One event of a process: (timestamp, action, object, score, console seq of the held alert)
Activity = tuple[str, str, str, float, int]


def _when(activity: Activity) -> str:
    return activity[0]


class Proc:
    __slots__ = ("entity_id", "parent_id", "pid", "name", "executable", "command_line",
                 "user", "host", "started", "exit_code", "seen", "execd", "last", "events",
                 "children")

    def __init__(self, entity_id: str, events_kept: int) -> None:
        self.entity_id = entity_id
        self.parent_id = ""
        self.pid: int | None = None
        self.name = self.executable = self.command_line = self.user = self.host = ""
        self.started = ""
        self.exit_code: int | None = None
        self.seen = False  # its own exec or fork was seen (else: known from its events)
        self.execd = False  # an exec was seen: a fork arriving later must not rename it
        self.last = 0.0
        self.events: deque[Activity] = deque(maxlen=events_kept)
        self.children: list[str] = []

    def describe(self, ev: dict[str, Any], prefix: str = "process.") -> None:
        """Take name, executable, command line, pid, user and host from ``ev``."""
        get = ev.get
        exe = get(prefix + "executable")
        if isinstance(exe, str) and exe:
            self.executable = _text(exe)
        name = get(prefix + "name")
        if isinstance(name, str) and name:
            self.name = _text(name, 80)
        elif self.executable and not self.name:
            self.name = self.executable.rpartition("/")[2]
        cmd = get(prefix + "command_line")
        if isinstance(cmd, str) and cmd:
            self.command_line = _text(cmd, TEXT_MAX * 2)
        pid = get(prefix + "pid")
        if isinstance(pid, int):
            self.pid = pid
        if prefix == "process.":
            user = get("user.name") or get("user.id")
            if user is not None:
                self.user = _text(user, 64)
            host = get("host.name")
            if isinstance(host, str):
                self.host = _text(host, 120)

    def link(self, child_id: str) -> None:
        children = self.children
        if child_id in children:
            return
        children.append(child_id)
        if len(children) > MAX_CHILDREN:
            del children[:MAX_CHILDREN // 2]


class ProcessTree:
    def __init__(self, window_s: float = 900.0, max_processes: int = 50_000,
                 events_per_process: int = 24) -> None:
        self.window_s = window_s
        self.max_processes = max_processes
        self.events_per_process = events_per_process
        self.procs: OrderedDict[str, Proc] = OrderedDict()  # least recently active first
        self.forgotten = 0

    def _touch(self, eid: str, now: float) -> Proc:
        procs = self.procs
        p = procs.get(eid)
        if p is None:
            p = procs[eid] = Proc(eid, self.events_per_process)
            if len(procs) > self.max_processes:
                procs.popitem(last=False)
                self.forgotten += 1
        else:
            procs.move_to_end(eid)
        p.last = now
        return p

    def note(self, ev: dict[str, Any], now: float, seq: int = 0) -> None:
        """Take one published event into the trees (``seq``: its held alert, if any).

        Called for every published event: the common case (activity of a known process) is
        a few lookups and one append."""
        eid = ev.get("process.entity_id")
        if eid.__class__ is not str or not eid or len(eid) > 128:
            return
        procs = self.procs
        p = procs.get(eid)
        if p is None:
            p = self._touch(eid, now)
        else:
            procs.move_to_end(eid)
            p.last = now
        action = ev.get("event.action")
        lifecycle = False
        if action == EXEC:
            lifecycle = p.seen = p.execd = True
            p.describe(ev)
            cmd = ev.get("process.command_line")  # a new program: the old command line goes
            p.command_line = _text(cmd, TEXT_MAX * 2) if isinstance(cmd, str) else ""
            p.started = p.started or _text(ev.get("@timestamp"), 40)
        elif action == FORK:
            # The hub publishes a batch one message per topic, so a child's exec can arrive
            # before its fork: the fork then only adds what the exec did not say.
            lifecycle = p.seen = True
            if not p.execd:
                p.describe(ev)
            ts = _text(ev.get("@timestamp"), 40)
            if not p.started or ts < p.started:
                p.started = ts
        elif action == EXIT:
            code = ev.get("process.exit_code")
            p.exit_code = code if isinstance(code, int) else -1
        elif not p.name:
            p.describe(ev)
        parent_id = ev.get("process.parent.entity_id")
        if parent_id is not None and (lifecycle or parent_id != p.parent_id):
            self._parent(p, parent_id, ev, now)
        ts = ev.get("@timestamp")
        p.events.append((ts if ts.__class__ is str and len(ts) <= 40 else _text(ts, 40),
                         action if action.__class__ is str else _text(action, 40), what(ev),
                         _number(ev.get("event.risk_score")), seq))

    def _parent(self, p: Proc, parent_id: Any, ev: dict[str, Any], now: float) -> None:
        """Record ``p``'s parent and link it as the parent's child (a stub parent when only
        the child's ``process.parent.*`` fields tell of it)."""
        if not isinstance(parent_id, str) or not parent_id or parent_id == p.entity_id \
                or len(parent_id) > 128:
            return
        p.parent_id = parent_id
        parent = self.procs.get(parent_id)
        if parent is None:
            parent = self._touch(parent_id, now)
            parent.describe(ev, "process.parent.")
            parent.host = p.host
        parent.link(p.entity_id)

    def expire(self, now: float) -> int:
        """Forget processes not active for ``window_s``; returns how many."""
        cutoff = now - self.window_s
        procs, n = self.procs, 0
        while procs:
            first = next(iter(procs.values()))
            if first.last >= cutoff:
                break
            procs.popitem(last=False)
            n += 1
        self.forgotten += n
        return n

    # -- the tree of one alert --------------------------------------------------------------
    def tree(self, ev: dict[str, Any], seq: int = 0) -> dict[str, Any] | None:
        """The ancestry of ``ev``'s process as nested nodes, root first: each ancestor with
        its other known children (collapsed), the alert's process with its descendants."""
        eid = ev.get("process.entity_id")
        chain: list[dict[str, Any]] = []
        seen: set[str] = set()
        cur = eid if isinstance(eid, str) else ""
        while cur and cur not in seen and len(chain) < MAX_DEPTH:
            seen.add(cur)
            p = self.procs.get(cur)
            if p is None:
                break
            chain.append(self._node(p, with_events=True))
            cur = p.parent_id
        if not chain:  # never seen: the event alone says who it was and who its parent was
            node = self._from_event(ev, "process.")
            if node is None:
                return None
            chain.append(node)
            parent = self._from_event(ev, "process.parent.")
            if parent is not None:
                chain.append(parent)
        chain[0]["alert"] = True
        budget = [MAX_DESCENDANTS]
        chain[0]["children"] = self._descendants(chain[0].get("entity_id", ""), 3, budget)
        ancestors = ev.get("threatseer.ancestors")
        if isinstance(ancestors, list):  # names only, beyond what is known (nearest first)
            for name in ancestors[len(chain) - 1:MAX_DEPTH]:
                chain.append({"name": _text(name, 80), "seen": False, "named_only": True,
                              "events": [], "children": []})
        for child, parent in zip(chain, chain[1:], strict=False):
            siblings = [self._node(self.procs[c], with_events=False)
                        for c in self._children_of(parent.get("entity_id", ""))
                        if c != child.get("entity_id")][-MAX_SIBLINGS:]
            parent["children"] = [*siblings, child]
        return chain[-1]

    def _children_of(self, eid: str) -> list[str]:
        p = self.procs.get(eid) if eid else None
        return [c for c in p.children if c in self.procs] if p is not None else []

    def _descendants(self, eid: str, depth: int, budget: list[int]) -> list[dict[str, Any]]:
        if depth <= 0:
            return []
        out = []
        for c in self._children_of(eid):
            if budget[0] <= 0:
                break
            budget[0] -= 1
            node = self._node(self.procs[c], with_events=True)
            node["children"] = self._descendants(c, depth - 1, budget)
            out.append(node)
        return out

    def _node(self, p: Proc, with_events: bool) -> dict[str, Any]:
        return {
            "entity_id": p.entity_id, "pid": p.pid, "name": p.name or "?",
            "executable": p.executable, "command_line": p.command_line, "user": p.user,
            "host": p.host, "started": p.started, "exit_code": p.exit_code, "seen": p.seen,
            # in time order: one batch reaches the console a message per topic
            "events": ([{"ts": e[0], "action": e[1], "what": e[2], "score": e[3], "seq": e[4]}
                        for e in sorted(p.events, key=_when)] if with_events else []),
            "event_count": len(p.events), "children": [],
        }

    @staticmethod
    def _from_event(ev: dict[str, Any], prefix: str) -> dict[str, Any] | None:
        p = Proc(_text(ev.get(prefix + "entity_id"), 128), 1)
        p.describe(ev, prefix)
        if not (p.name or p.executable or p.pid is not None):
            return None
        return {"entity_id": p.entity_id, "pid": p.pid, "name": p.name or "?",
                "executable": p.executable, "command_line": p.command_line, "user": p.user,
                "host": p.host, "started": "", "exit_code": None, "seen": False,
                "events": [], "event_count": 0, "children": []}
