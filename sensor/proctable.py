"""The sensor's view of the process tree, so every event can name its parent and ancestors.

Seeded from /proc at start, then kept current by the kernel's fork, exec and exit events.
Exited processes stay in a small graveyard for a while: a child's exec often arrives after its
parent's exit in the same batch, and it should still name that parent. "A while" is
GRAVEYARD_S seconds and at most ``graveyard`` entries (256: enough for the milliseconds between
an exit and a late event, few enough to leave little heap behind an exec burst). Held by
count alone (4,096), an exec burst left ~2.5 MiB of dead processes in the sensor for good.

What the enricher says of a parent (its name, ids, argv and its ancestors' names) is the same
for every fork, exec and exit of its children: it is kept on the parent (:meth:`Proc.lineage`,
:attr:`Proc.described`) and reused while :attr:`ProcessTable.epoch` is unchanged. The epoch
moves whenever something such a description was read from changes: a process that was read
as someone's parent or ancestor (``watched``) execs, changes uid, is replaced by a reused pid
or is forgotten, or a pid an ancestry walk found missing appears. A process that no child
has named (the bulk of an exec flood: short children) changes without moving it.
"""

from __future__ import annotations

import os
import time
from collections import OrderedDict
from collections.abc import Callable

from threatseer.native.clock import boot_ns
from threatseer.sensor.digest import blake2b

CLK_TCK = os.sysconf("SC_CLK_TCK")
NS_PER_TICK = 1_000_000_000 // CLK_TCK
MAX_ANCESTORS = 4
GRAVEYARD_S = 2.0


def start_ticks(start: str | None) -> int | None:
    """Clock ticks since boot of a ``process.start``, as /proc/<pid>/stat counts them."""
    ns = boot_ns(start) if start else None
    return ns // NS_PER_TICK if ns is not None and ns >= 0 else None


class Proc:
    __slots__ = ("pid", "ppid", "name", "executable", "args", "start_ticks", "entity_id",
                 "generation", "context", "context_key", "uid", "start", "watched",
                 "lineage", "described", "described_epoch")

    def __init__(
        self, pid: int, ppid: int, name: str, executable: str, args: list[str], start_ticks: int,
        entity_id: str,
    ) -> None:
        self.pid = pid
        self.ppid = ppid
        self.name = name
        self.executable = executable
        self.args = args
        self.start_ticks = start_ticks
        self.entity_id = entity_id
        # Real uid (ECS keyword) at the last exec or from /proc, for children's
        # process.parent.user.*; "" when unknown.
        self.uid = ""
        # Bumped on every exec, so cached descriptions of this process (and of its children,
        # which name it as their parent) know when they are stale.
        self.generation = 0
        # Fields the enricher adds to this process's non-exec events, and what they were
        # built from (parent pid, parent generation, own generation).
        self.context: dict | None = None
        self.context_key: tuple[int, int, int] | None = None
        # The process.start this entry's start_ticks were reckoned from (None: from /proc).
        self.start: str | None = None
        # Read as another process's parent or ancestor: a change to it moves the epoch.
        self.watched = False
        # Names of this process and up to MAX_ANCESTORS-1 ancestors (ProcessTable.ancestors)
        # and the fields that describe it as a parent (the enricher's: with its argv and
        # without), as of epoch described_epoch.
        self.lineage: list[str] | None = None
        self.described: tuple[dict, dict] | None = None
        self.described_epoch = -1

    @property
    def display_name(self) -> str:
        """Basename of the executable (comm is cut at 15 bytes), else comm."""
        return self.executable.rsplit("/", 1)[-1] if self.executable else self.name


class ProcessTable:
    def __init__(self, host_id: str, proc_root: str = "/proc", graveyard: int = 256,
                 reuse: bool = True) -> None:
        """``reuse``: keep parent descriptions for the epoch (False: build them for every
        event, the reference the tests compare the kept ones with)."""
        self.host_id = host_id
        self.reuse = reuse
        self.proc_root = proc_root
        self.procs: dict[int, Proc] = {}
        self._graveyard: OrderedDict[int, tuple[Proc, float]] = OrderedDict()
        self._graveyard_size = graveyard
        # Told the pid of each dead process leaving the graveyard (what its children's
        # events say of their parent changes then, without a kernel record).
        self.on_forget: Callable[[int], None] | None = None
        # Moves whenever a cached parent description may be stale (see the module's doc).
        self.epoch = 0
        # pids an ancestry walk looked up and did not find: their appearance moves the epoch.
        self._missing: set[int] = set()

    # ---- identity ---------------------------------------------------------------------
    def entity_id(self, pid: int, start_ticks: int) -> str:
        """Stable id of one process: pid and start time (clock ticks, so /proc and the kernel
        agree) on this host."""
        raw = f"{self.host_id}:{pid}:{start_ticks}".encode()
        return blake2b(raw, digest_size=12).hexdigest()

    # ---- /proc ------------------------------------------------------------------------
    def seed(self) -> int:
        """Load every running process from /proc; returns how many were found."""
        for entry in os.listdir(self.proc_root):
            if entry.isdigit():
                proc = self.read_proc(int(entry))
                if proc is not None:
                    self._put(proc)
        return len(self.procs)

    def read_proc(self, pid: int) -> Proc | None:
        base = f"{self.proc_root}/{pid}"
        try:
            with open(f"{base}/stat", "rb") as f:
                stat = f.read().decode(errors="replace")
        except OSError:
            return None
        # comm may contain spaces and parentheses: split around the last ')'.
        lparen, rparen = stat.find("("), stat.rfind(")")
        name = stat[lparen + 1 : rparen]
        fields = stat[rparen + 2 :].split()
        try:
            ppid, start_ticks = int(fields[1]), int(fields[19])
        except (IndexError, ValueError):
            return None
        try:
            executable = os.readlink(f"{base}/exe")
        except OSError:
            executable = ""
        if executable.endswith(" (deleted)"):
            executable = executable[: -len(" (deleted)")]
        try:
            with open(f"{base}/cmdline", "rb") as f:
                raw = f.read()
            args = [a.decode(errors="replace") for a in raw.split(b"\0")[:-1]] if raw else []
        except OSError:
            args = []
        proc = Proc(pid, ppid, name, executable, args, start_ticks,
                    self.entity_id(pid, start_ticks))
        try:
            with open(f"{base}/status", "rb") as f:
                for line in f:
                    if line.startswith(b"Uid:"):
                        proc.uid = line.split()[1].decode()
                        break
        except (OSError, IndexError):
            pass
        return proc

    # ---- lookups ----------------------------------------------------------------------
    def get(self, pid: int) -> Proc | None:
        proc = self.procs.get(pid)
        if proc is not None:
            return proc
        dead = self._graveyard.get(pid)
        if dead is not None:
            return dead[0]
        if pid > 0:
            proc = self.read_proc(pid)  # started in a race with seeding, or before a lost event
            if proc is not None:
                self._put(proc)
        return proc

    def ancestors(self, ppid: int) -> list[str]:
        """Names of the parent and up to MAX_ANCESTORS-1 further ancestors, nearest first."""
        parent = self.get(ppid) if ppid > 0 else None
        if parent is None:
            if ppid > 0:
                self._missing.add(ppid)
            return []
        return list(self.lineage(parent))

    def lineage(self, proc: Proc) -> list[str]:
        """:meth:`ancestors` of ``proc``'s pid, kept on ``proc`` for the current epoch (the
        caller must not change the list). Every process read is marked watched."""
        if proc.described_epoch == self.epoch and proc.lineage is not None and self.reuse:
            return proc.lineage
        names: list[str] = []
        seen: list[int] = []
        live = self.procs
        pid = proc.pid
        node: Proc | None = proc
        while pid > 0 and len(names) < MAX_ANCESTORS and pid not in seen:
            seen.append(pid)
            if node is None:
                node = live.get(pid) or self.get(pid)
                if node is None:
                    self._missing.add(pid)
                    break
            node.watched = True
            exe = node.executable
            names.append(exe.rsplit("/", 1)[-1] if exe else node.name)
            pid = node.ppid
            node = None
        if len(self._missing) > 4096:
            self._missing.clear()
            self.epoch += 1  # what the walks that found them missing said may be stale
        proc.lineage, proc.described, proc.described_epoch = names, None, self.epoch
        return names

    def set_uid(self, proc: Proc, uid: str) -> None:
        """``proc``'s real uid changed (exec or setuid): its children's parent fields too."""
        if proc.uid != uid:
            proc.uid = uid
            if proc.watched:
                self.epoch += 1

    # ---- updates from kernel events ---------------------------------------------------
    def on_fork(self, pid: int, ppid: int, start: str | None) -> Proc:
        """A new process; ``start`` is its ``process.start`` (the decoder's)."""
        parent = self.procs.get(ppid) or self.get(ppid)
        ticks = start_ticks(start) or 0
        if parent is not None:
            proc = Proc(pid, ppid, parent.name, parent.executable, parent.args, ticks,
                        self.entity_id(pid, ticks))
            proc.uid = parent.uid
        else:
            proc = Proc(pid, ppid, "", "", [], ticks, self.entity_id(pid, ticks))
        proc.start = start
        self._put(proc)
        return proc

    def on_exec(
        self, pid: int, ppid: int, name: str, executable: str, args: list[str],
        start: str | None,
    ) -> Proc:
        proc = self.procs.get(pid)
        if proc is not None and start is not None and start == proc.start:
            ticks = proc.start_ticks  # the fork's process.start: reckoned already
        else:
            ticks = start_ticks(start) or (proc.start_ticks if proc else 0)
        if proc is None or proc.start_ticks != ticks:
            proc = Proc(pid, ppid, name, executable, args, ticks, self.entity_id(pid, ticks))
            proc.start = start
            self._put(proc)
        else:
            proc.ppid, proc.name, proc.executable, proc.args = ppid, name, executable, args
            proc.generation += 1
            if proc.watched:
                self.epoch += 1
            proc.lineage = proc.described = None
        return proc

    def _put(self, proc: Proc) -> None:
        """Enter ``proc`` in the live table. It hides what was known under its pid (a live
        entry whose exit was lost, a dead one in the graveyard, or nothing): descriptions
        read from that move the epoch."""
        pid = proc.pid
        old = self.procs.get(pid)
        if old is None:
            dead = self._graveyard.get(pid)
            old = dead[0] if dead is not None else None
        if (old is not None and old.watched) or pid in self._missing:
            self._missing.discard(pid)
            self.epoch += 1
        self.procs[pid] = proc

    def on_exit(self, pid: int) -> None:
        proc = self.procs.pop(pid, None)
        if proc is not None:
            now = time.monotonic()
            self._graveyard.pop(pid, None)  # a reused pid goes to the back
            self._graveyard[pid] = (proc, now)
            if len(self._graveyard) > self._graveyard_size:
                gone, (dead, _) = self._graveyard.popitem(last=False)
                if dead.watched:
                    self.epoch += 1
                if self.on_forget is not None:
                    self.on_forget(gone)
            if now - next(iter(self._graveyard.values()))[1] >= GRAVEYARD_S:
                self.expire(now)

    def expire(self, now: float | None = None) -> int:
        """Forget processes that exited more than GRAVEYARD_S ago; returns how many. Also
        called on a timer, as a quiet host has no exits to trigger it."""
        if now is None:
            now = time.monotonic()
        graveyard, gone = self._graveyard, 0
        while graveyard:
            _proc, died = next(iter(graveyard.values()))
            if now - died < GRAVEYARD_S:
                break
            pid, (dead, _) = graveyard.popitem(last=False)
            if dead.watched:
                self.epoch += 1
            if self.on_forget is not None:
                self.on_forget(pid)
            gone += 1
        return gone

    @property
    def exited(self) -> int:
        """Exited processes still remembered (the graveyard)."""
        return len(self._graveyard)
