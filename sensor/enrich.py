"""Enrichment: what the kernel record cannot say on its own.

The native reader gives each event the facts the kernel knows at that instant. Here the sensor
adds what needs state: the parent's executable and arguments and the names of up to four
ancestors (from the process table), the user name, the executable's SHA-256, the container's
id, name and image, and who the sensor is. It also turns the first exec seen in a new container
into a ``container-started`` event.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from typing import Any

from threatseer.common import __version__, ecs, wire
from threatseer.sensor import hostinfo
from threatseer.sensor.containers import ContainerCgroups, ContainerDirectory, container_id
from threatseer.sensor.hashing import PENDING, ExecutableHashes
from threatseer.sensor.proctable import Proc, ProcessTable
from threatseer.sensor.users import UserNames

Event = dict[str, Any]
# Actions that change the process table or are container lifecycle; every other event only
# gets its process's cached context.
_STATEFUL = frozenset((ecs.EXEC, ecs.FORK, ecs.EXIT, ecs.CONTAINER_CREATED,
                       ecs.CONTAINER_DESTROYED))
_MEMCG = "threatseer.cgroup.memory"


class Enricher:
    def __init__(
        self, sensor_id: str, host_name: str, host_id: str, *, proctable: ProcessTable,
        hashes: ExecutableHashes | None = None, containers: ContainerDirectory | None = None,
        users: UserNames | None = None, host: dict[str, Any] | None = None,
    ) -> None:
        """``host``: the host.* details (architecture, addresses, OS); read from this host
        when None."""
        self.procs = proctable
        self.hashes = hashes or ExecutableHashes()
        self.containers = containers or ContainerDirectory()
        self.users = users or UserNames()
        self.identity = {
            "host.name": host_name,
            "host.id": host_id,
            "agent.type": "threatseer",
            "agent.id": sensor_id,
            "agent.version": __version__,
            "ecs.version": ecs.ECS_VERSION,
            **(hostinfo.host_details() if host is None else host),
        }
        # event.id: sensor id, a per-run nonce and a counter: unique without a per-event uuid;
        # "<sensor id>:" is the namespace the hub keeps it in (see hub/_batch.pyx prepare()).
        self._id_prefix = f"{sensor_id}:{time.time_ns():x}-"
        self._seq = itertools.count(1)
        self._next_seq: Callable[[], int] = self._seq.__next__
        self._kernel_stamped = False  # the reader stamps kernel events (attach)
        self.contexts: Any = None  # the reader's encoding contexts (attach)
        self._running_containers: set[str] = set()
        self._container_ids: dict[str, str] = {}  # memory cgroup name -> container id or ""
        self.cgroups = ContainerCgroups()  # v2 cgroup id -> container id
        # Containers created and not yet destroyed: a runtime that makes a container's
        # cgroup in both the v1 memory and the v2 hierarchy is one container-created event.
        self._live_containers: set[str] = set()
        self._gone: dict[str, None] = {}  # recently destroyed (ordered: oldest first)
        self.not_containers = 0
        # The kill event of an exec the kernel's enforcement acted on (sensor/response.py).
        self.on_verdict: Callable[[Event], Event | None] | None = None

    def stamp(self, event: Event) -> None:
        """Give ``event`` a unique id (also synthetic events). The sensor's identity
        (:attr:`identity`) is added by the sink: once per batch on the wire."""
        n = self._next_seq()
        event["event.sequence"] = n
        event["event.id"] = self._id_prefix + str(n)

    def attach(self, probe: Any, encode: bool) -> None:
        """Let the reader stamp kernel events itself (in kernel order, from this counter on)
        and, with ``encode``, encode the sensitive opens of processes whose context is
        registered straight to msgpack (native/encode/): after each batch, the processes
        whose opens took the dict path get their context registered."""
        probe.set_identity(self._id_prefix, next(self._seq))
        self._next_seq = probe.next_sequence
        self._kernel_stamped = True
        if encode:
            probe.set_encoding(wire.Encoded)
            self.contexts = probe.contexts
            self.procs.on_forget = self.contexts.forget

    def enrich(self, events: list[Any], dicts: list[int] | None = None) -> list[Any]:
        """Enrich ``events`` in place, in kernel order; return them with any derived events
        (container-started, kill) inserted after the event that revealed them. Events the
        reader encoded itself (:data:`threatseer.common.wire.Encoded`) are enriched already:
        ``dicts``, the positions of the others (``Probe.dict_positions()``), spares a pass
        over them."""
        procs = self.procs
        user_names, user_name = self.users.known, self.users.name
        container_ids = self._container_ids
        v2_containers = self.cgroups.by_id
        stamp = self.stamp
        kernel_stamped = self._kernel_stamped
        # opens of known processes that took the dict path: pid -> (uid, memory cgroup)
        encodable: dict[int, tuple[Any, Any]] | None = {} if self.contexts is not None \
            else None
        dropped: list[int] = []  # positions of events that are no events (not containers)
        extra: dict[int, list[Event]] = {}  # position -> derived events that follow it
        for i in range(len(events)) if dicts is None else dicts:
            ev = events[i]
            if type(ev) is not dict:  # encoded by the reader: enriched already
                continue
            action = ev.get("event.action")
            pid = ev.get("process.pid", 0)
            derived = None
            if action not in _STATEFUL:  # the bulk (opens, connects): only context to add
                proc = procs.get(pid) if pid else None
                if proc is not None:
                    ev.update(self._context(proc))
                    if encodable is not None and action == ecs.OPEN:
                        encodable[pid] = (ev.get("user.id"), ev.get(_MEMCG, ""))
                    elif action == ecs.SETUID:  # the real uid its children will name
                        uid = ev.get("user.changes.id")
                        if type(uid) is str:
                            procs.set_uid(proc, uid)
            elif action == ecs.EXEC:
                proc = self._exec(ev, pid)
                if "threatseer.enforce.verdict" in ev and self.on_verdict is not None:
                    derived = ev  # the kill event follows the exec event, once it is stamped
            elif action == ecs.FORK:
                proc = procs.on_fork(pid, ev.get("process.parent.pid", 0),
                                     ev.get("process.start"))
                ev["process.entity_id"] = proc.entity_id
                self._describe_parent(ev, proc.ppid)
                if proc.executable:
                    ev["process.executable"] = proc.executable
            elif action == ecs.EXIT:
                proc = procs.get(pid)
                if proc is not None:
                    self._describe_process(ev, proc)
                procs.on_exit(pid)
            elif not self._container_lifecycle(ev, action):
                self.not_containers += 1  # a cgroup that is no container: not an event
                dropped.append(i)
                continue
            uid = ev.get("user.id")
            if uid is not None:
                name = user_names[uid] if uid in user_names else user_name(uid)
                if name is not None:
                    ev["user.name"] = name
                if action == ecs.EXEC and pid and type(uid) is str:
                    procs.set_uid(proc, uid)
            memcg = ev.get(_MEMCG, "")
            cid = container_ids.get(memcg)
            if cid is None:
                cid = container_ids[memcg] = container_id(memcg)
                if len(container_ids) > 4096:
                    container_ids.clear()
            if not cid:
                cgid = ev.get("threatseer.cgroup.id")
                cid = v2_containers.get(cgid)
                if cid is None:
                    cid = self.cgroups.get(cgid)
            if cid and encodable:
                # a container's process (cgroup v1 or v2): its opens keep the dict path
                encodable.pop(pid, None)
            if not kernel_stamped:
                stamp(ev)
            if derived is not None:
                killed = self.on_verdict(ev)  # type: ignore[misc]
                if killed is not None:
                    stamp(killed)
                    extra.setdefault(i, []).append(killed)
            if cid:
                started = self._container(ev, cid)
                if started is not None:
                    stamp(started)
                    extra.setdefault(i, []).append(started)
        if encodable:
            self._register(encodable)
        if not dropped and not extra:
            return events
        out: list[Any] = []
        drop = set(dropped)
        for i, ev in enumerate(events):
            if i not in drop:
                out.append(ev)
            more = extra.get(i)
            if more:
                out.extend(more)
        return out

    def _register(self, encodable: dict[int, tuple[Any, Any]]) -> None:
        """Give the reader the fields this enrichment adds to the opens of these processes
        (in containers: none, their fields may still change), as the table is now: every
        record of this batch has passed both the reader and the table."""
        live, contexts, container_ids = self.procs.procs, self.contexts, self._container_ids
        for pid, (uid, memcg) in encodable.items():
            proc = live.get(pid)
            if proc is None or container_ids.get(memcg) or not isinstance(uid, str):
                continue
            fields = dict(self._context(proc))
            name = self.users.name(uid)
            if name is not None:
                fields["user.name"] = name
            tail, n = wire.encode_fields(fields)
            contexts.register(pid, proc.ppid, uid, memcg, tail, n)

    # ---- per kind ---------------------------------------------------------------------
    def _exec(self, ev: Event, pid: int) -> Proc:
        args = ev.get("process.args") or []
        executable = ev.get("process.executable", "")
        proc = self.procs.on_exec(pid, ev.get("process.parent.pid", 0),
                                  ev.get("process.name", ""), executable, args,
                                  ev.get("process.start"))
        ev["process.entity_id"] = proc.entity_id
        ev["process.command_line"] = " ".join(args)
        self._describe_parent(ev, proc.ppid)
        if executable:
            digest = self.hashes.lookup(executable, ev)
            if digest and digest is not PENDING:  # pending: the worker sets it
                ev["process.hash.sha256"] = digest
        return proc

    def _context(self, proc: Proc) -> dict[str, Any]:
        """What every non-exec event of ``proc`` gets from the table: built once per
        (process, parent) version rather than per event."""
        parent = self.procs.get(proc.ppid) if proc.ppid else None
        key = (proc.ppid, parent.generation if parent else -1, proc.generation)
        if proc.context is not None and proc.context_key == key:
            return proc.context
        ctx: dict[str, Any] = {}
        self._describe_process(ctx, proc)
        self._describe_parent(ctx, proc.ppid, with_args=False)
        proc.context, proc.context_key = ctx, key
        return ctx

    def _describe_process(self, ev: Event, proc: Any) -> None:
        ev["process.entity_id"] = proc.entity_id
        if proc.executable:
            ev.setdefault("process.executable", proc.executable)
        if proc.args:
            ev.setdefault("process.args", proc.args)
            ev.setdefault("process.command_line", " ".join(proc.args))

    def _describe_parent(self, ev: Event, ppid: int, with_args: bool = True) -> None:
        """Parent fields; the parent's argv only where it matters most (exec and fork), to
        keep every other event small on the wire. Built once per parent and epoch (the
        process table says when they may be stale) and shared by its children's events."""
        procs = self.procs
        parent = (procs.procs.get(ppid) or procs.get(ppid)) if ppid else None
        if parent is None:
            return
        lineage = procs.lineage(parent)
        described = parent.described  # (with argv, without), as of the lineage's epoch
        if described is None:
            described = parent.described = (self._parent_fields(parent, lineage, True),
                                             self._parent_fields(parent, lineage, False))
        ev.update(described[0] if with_args else described[1])

    def _parent_fields(self, parent: Proc, lineage: list[str], with_args: bool) -> Event:
        fields: Event = {
            "process.parent.name": parent.display_name,
            "process.parent.entity_id": parent.entity_id,
        }
        if parent.executable:
            fields["process.parent.executable"] = parent.executable
        if with_args:
            if parent.args:
                fields["process.parent.args"] = parent.args
                fields["process.parent.command_line"] = " ".join(parent.args)
            if parent.uid:
                fields["process.parent.user.id"] = parent.uid
                name = self.users.name(parent.uid)
                if name is not None:
                    fields["process.parent.user.name"] = name
        fields["threatseer.ancestors"] = lineage
        return fields

    def _container(self, ev: Event, cid: str) -> Event | None:
        """Set container.* for container ``cid``; return a container-started event for the
        first exec seen in it."""
        info = self.containers.lookup(cid)
        ev["container.id"] = cid
        if info.name:
            ev["container.name"] = info.name
        if info.image:
            ev["container.image.name"] = info.image
        if info.runtime:
            ev["container.runtime"] = info.runtime
        if ev.get("event.action") != ecs.EXEC or cid in self._running_containers:
            return None
        self._running_containers.add(cid)
        category, types = ecs.CATEGORIES[ecs.CONTAINER_STARTED]
        started = {k: v for k, v in ev.items() if k.startswith(("container.", "process.",
                                                                  "user.", "threatseer."))}
        started.update({
            "@timestamp": ev.get("@timestamp"), "event.kind": "event",
            "event.category": category, "event.type": types,
            "event.action": ecs.CONTAINER_STARTED,
        })
        return started

    def _container_lifecycle(self, ev: Event, action: str) -> bool:
        """Whether a cgroup mkdir/rmdir is a container's creation or removal (and the first
        report of it: a runtime may make its cgroups in two hierarchies)."""
        path = ev.get("threatseer.cgroup.path", "")
        if ev.get("threatseer.cgroup.hierarchy") == 0:  # the unified (v2) hierarchy
            cgroup_id = ev.get("threatseer.cgroup.id", 0)
            if action == ecs.CONTAINER_CREATED:
                cid = self.cgroups.created(cgroup_id, path)
            else:
                cid = self.cgroups.get(cgroup_id)
                self.cgroups.removed(cgroup_id)
            if cid and cid != container_id(path):
                return False  # a sub-cgroup of a container, not the container itself
        else:
            cid = container_id(path) or container_id(ev.get("threatseer.cgroup.memory", ""))
        if not cid:
            return False
        ev["container.id"] = cid
        if action == ecs.CONTAINER_CREATED:
            if cid in self._live_containers:
                return False
            self._live_containers.add(cid)
            self._gone.pop(cid, None)
        else:
            if cid in self._gone:
                return False
            self._gone[cid] = None
            if len(self._gone) > 1024:
                del self._gone[next(iter(self._gone))]
            self._live_containers.discard(cid)
            self._running_containers.discard(cid)
            self.containers.forget(cid)
        return True
