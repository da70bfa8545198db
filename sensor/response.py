"""Response on the sensor: kill the process a hub command names, and report the kernel's
exec enforcement.

A kill command (:class:`threatseer.common.wire.KillCommand`) names a process by pid and
``process.entity_id`` (a hash of host, pid and start time). Between the event and the command
that process may have exited and its pid gone to another, innocent one, so the sensor:

1. opens a pidfd for the pid (from then on the handle is that one process, whatever happens
   to the number),
2. reads ``/proc/PID/stat`` and recomputes the entity id from its start time: another start
   time is another process ("pid reused": nothing is killed); a kernel thread, pid 1, the
   sensor itself and protected names (:mod:`threatseer.common.protect`) are refused,
3. checks through the pidfd that the process is still alive (so what was read in 2 was that
   process's, not a successor's), and
4. sends SIGKILL with ``pidfd_send_signal`` -- or, for a dry run, only reports.

Every decision becomes a ``kill`` event (event.outcome, event.reason, linked to the alert by
``threatseer.response.event_id``) and a log line. The hub's exec policy is handed to the
kernel (``Probe.set_exec_policy``) where the kernel took the enforcement program; the exec
events then say what it did (``threatseer.enforce.verdict``) and each such verdict becomes a
``kill`` event too.

The kill needs CAP_KILL for other users' processes (and reading /proc/PID/exe theirs
CAP_SYS_PTRACE): :data:`KILL_CAPABILITIES` is what a sensor dropping privileges must keep.
"""

from __future__ import annotations

import logging
import os
import signal
from collections import OrderedDict
from typing import Any

from threatseer.common import ecs, wire
from threatseer.common.protect import protected_by
from threatseer.common.ratelimit import RateLimit
from threatseer.sensor.health import now_iso
from threatseer.sensor.proctable import ProcessTable

log = logging.getLogger("threatseer.sensor.response")

# The capabilities the kill path needs once the sensor has dropped the others.
KILL_CAPABILITIES = ("CAP_KILL", "CAP_SYS_PTRACE")
PF_KTHREAD = 0x00200000
# exec verdicts (threatseer.enforce.verdict) -> (event.outcome, event.reason)
_VERDICTS = {
    "killed": ("success", "killed at exec, before its first instruction"),
    "dry-run": ("unknown", "dry run: would have been killed at exec"),
    "protected": ("failure", "refused: protected process name"),
    "limited": ("failure", "refused: enforcement rate limit reached"),
    "failed": ("failure", "the kernel refused the signal"),
}
Event = dict[str, Any]


def _stat(pid: int) -> tuple[str, int, int]:
    """(comm, flags, start time in clock ticks) from /proc/PID/stat."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        raw = f.read().decode(errors="replace")
    comm = raw[raw.find("(") + 1 : raw.rfind(")")]
    fields = raw[raw.rfind(")") + 2 :].split()
    return comm, int(fields[6]), int(fields[19])


class Responder:
    def __init__(self, procs: ProcessTable, *, allow_kill: bool = True,
                 protected: list[str] | None = None, max_kills_per_minute: int = 30,
                 probe: Any = None) -> None:
        self.procs = procs
        self.allow_kill = allow_kill
        self.protected = list(protected or [])
        self.limit = RateLimit(max_kills_per_minute)
        self.probe = probe
        self.own_pid = os.getpid()
        self.policy: wire.ExecPolicy | None = None
        self.rule_names: dict[int, str] = {}
        self._done: OrderedDict[str, None] = OrderedDict()  # command ids carried out
        self.kills = 0

    # ---- hub commands -------------------------------------------------------------------
    def handle(self, cmd: wire.Command) -> list[Event]:
        """Carry out one command; the events that report it."""
        if isinstance(cmd, wire.KillCommand):
            if cmd.id in self._done:
                return []
            self._done[cmd.id] = None
            if len(self._done) > 4096:
                self._done.popitem(last=False)
            return [self.kill(cmd)]
        self.apply_policy(cmd)
        return []

    def kill(self, cmd: wire.KillCommand) -> Event:
        """Check and kill (see the module docstring); the ``kill`` event saying what
        happened."""
        ev = self._event("hub", cmd.pid, cmd.rule, cmd.dry_run, cmd.event_id)
        ev["threatseer.response.id"] = cmd.id
        ev["process.entity_id"] = cmd.entity_id
        if cmd.executable:
            ev["process.executable"] = cmd.executable
        outcome, reason = self._kill(cmd, ev)
        ev["event.outcome"], ev["event.reason"] = outcome, reason
        level = logging.WARNING if outcome == "success" else logging.INFO
        log.log(level, "kill pid %d (%s, entity %s) for rule %r, alert %s: %s%s", cmd.pid,
                ev.get("process.name") or cmd.executable or "?", cmd.entity_id, cmd.rule,
                cmd.event_id or "-", reason, " (dry run)" if cmd.dry_run else "")
        return ev

    def _kill(self, cmd: wire.KillCommand, ev: Event) -> tuple[str, str]:
        pid = cmd.pid
        if not self.allow_kill:
            return "failure", "refused: allow_kill is false on this sensor"
        if pid <= 1 or pid == self.own_pid:
            return "failure", "refused: pid 1 or the sensor itself"
        try:
            pidfd = os.pidfd_open(pid)
        except ProcessLookupError:
            return "failure", "gone: no such process"
        except OSError as exc:
            return "failure", f"cannot open the process: {exc.strerror}"
        try:
            try:
                comm, flags, ticks = _stat(pid)
                exe = _readlink(pid)
            except (OSError, ValueError, IndexError):
                return "failure", "gone: its /proc entry vanished"
            ev["process.name"] = comm
            if exe:
                ev["process.executable"] = exe
            if self.procs.entity_id(pid, ticks) != cmd.entity_id:
                return "failure", ("refused: pid reused (another process, started later, has "
                                   "it now)")
            if flags & PF_KTHREAD:
                return "failure", "refused: a kernel thread"
            if os.getppid() == pid:
                return "failure", "refused: the sensor's parent"
            entry = protected_by(comm, exe, self.protected)
            if entry:
                return "failure", f"refused: protected process ({entry})"
            try:  # alive now, so the stat above was this process's (its pid is held)
                signal.pidfd_send_signal(pidfd, 0)
            except ProcessLookupError:
                return "failure", "gone: exited meanwhile"
            if cmd.dry_run:
                return "unknown", "dry run: would have been killed"
            if not self.limit.take():
                return "failure", "refused: the sensor's kill rate limit (max_kills_per_minute)"
            try:
                signal.pidfd_send_signal(pidfd, signal.SIGKILL)
            except ProcessLookupError:
                return "failure", "gone: exited meanwhile"
            except PermissionError:
                return "failure", "not permitted (the sensor lacks CAP_KILL)"
            self.kills += 1
            return "success", "killed"
        finally:
            os.close(pidfd)

    # ---- the kernel's exec enforcement ---------------------------------------------------
    def apply_policy(self, policy: wire.ExecPolicy) -> None:
        """Hand the hub's exec denylist to the kernel (or say why not)."""
        if self.policy is not None and self.policy.version == policy.version:
            return
        self.policy = policy
        self.rule_names = {r.id: r.rule for r in policy.rules}
        if not self.allow_kill:
            if policy.rules:
                log.warning("exec policy %s from the hub not applied: allow_kill is false on "
                            "this sensor", policy.version)
            return
        probe = self.probe
        refused = getattr(probe, "enforce_refused", "no probe") if probe is not None \
            else "no probe"
        if refused:
            if policy.rules:
                log.warning("exec policy %s (%d rules) not enforced in the kernel (%s): the hub "
                            "kills denied execs when their events reach it", policy.version,
                            len(policy.rules), refused)
            return
        from threatseer.native.probe import EXEC_KINDS

        entries = exec_entries(policy, EXEC_KINDS)
        protected = [p for p in (*policy.protected, *self.protected) if not p.startswith("/")]
        try:
            probe.set_exec_policy(entries, protected, policy.max_kills_per_minute, 60.0)
        except (OSError, ValueError) as exc:
            log.error("exec policy %s refused by the kernel side: %s", policy.version, exc)
            return
        log.info("exec policy %s enforced in the kernel: %d rules, %d prefixes%s",
                 policy.version, len(policy.rules), len(entries),
                 "" if policy.rules else " (enforcement off)")

    def verdict_event(self, exec_ev: Event) -> Event | None:
        """The ``kill`` event for an exec event the kernel's enforcement acted on."""
        verdict = exec_ev.get("threatseer.enforce.verdict")
        if verdict is None:
            return None
        rule = self.rule_names.get(exec_ev.get("threatseer.enforce.rule_id", 0), "")
        if rule:
            exec_ev["threatseer.enforce.rule"] = rule
        outcome, reason = _VERDICTS.get(verdict, ("failure", f"verdict {verdict}"))
        ev = self._event("kernel", exec_ev.get("process.pid", 0), rule, verdict == "dry-run",
                         exec_ev.get("event.id", ""))
        for key in ("process.entity_id", "process.name", "process.executable",
                    "process.parent.pid", "process.args", "user.id"):
            if key in exec_ev:
                ev[key] = exec_ev[key]
        ev["event.outcome"], ev["event.reason"] = outcome, reason
        log.log(logging.WARNING if verdict == "killed" else logging.INFO,
                "exec of %s (pid %s) for rule %r: %s", exec_ev.get("process.executable"),
                exec_ev.get("process.pid"), rule, reason)
        return ev

    def _event(self, source: str, pid: int, rule: str, dry_run: bool,
               event_id: str) -> Event:
        category, types = ecs.CATEGORIES[ecs.KILL]
        return {
            "@timestamp": now_iso(), "event.kind": "event", "event.category": category,
            "event.type": types, "event.action": ecs.KILL, "process.pid": pid,
            "threatseer.response.source": source, "threatseer.response.rule": rule,
            "threatseer.response.dry_run": dry_run, "threatseer.response.event_id": event_id,
        }


def exec_entries(policy: wire.ExecPolicy, kinds: dict[str, int],
                 ) -> dict[str, tuple[int, int, tuple[int, int, int]]]:
    """The kernel's denylist entries for a policy: ``{prefix: (kill bits, dry-run bits,
    rule id per kind)}``. The kernel looks up the longest matching prefix only, so each entry
    also carries what the shorter prefixes above it deny."""
    own: dict[str, list[Any]] = {}
    slot = {"any": 0, "memfd": 1, "deleted": 2}
    for rule in policy.rules:
        for prefix in rule.prefixes:
            entry = own.setdefault(prefix, [0, 0, [0, 0, 0]])
            for kind in rule.kinds:
                bit = kinds[kind]
                if (entry[0] | entry[1]) & bit:
                    continue  # the first rule of a kind at a prefix names it
                entry[1 if rule.dry_run else 0] |= bit
                entry[2][slot[kind]] = rule.id
    out = {}
    for prefix in own:
        kill, dry, rules = 0, 0, [0, 0, 0]
        for other in sorted((p for p in own if prefix.startswith(p)), key=len, reverse=True):
            k, d, r = own[other]
            for kind, i in slot.items():
                bit = kinds[kind]
                if (kill | dry) & bit or not (k | d) & bit:
                    continue
                kill |= k & bit
                dry |= d & bit
                rules[i] = r[i]
        out[prefix] = (kill, dry, (rules[0], rules[1], rules[2]))
    return out


def _readlink(pid: int) -> str:
    try:
        exe = os.readlink(f"/proc/{pid}/exe")
    except OSError:
        return ""
    return exe[: -len(" (deleted)")] if exe.endswith(" (deleted)") else exe
