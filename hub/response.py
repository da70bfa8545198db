"""Response: the hub asks a sensor to kill a process when a rule with ``action: kill`` fired.

Safety first, in this order, for every scored event whose indicators name a rule with an
action (hub/rules/model.py: query and Sigma rules, static entries, sha256 IOCs):

1. the rule must be named in the config's ``response.kill_rules`` (else: alert only);
2. the event must name a live process: ``process.pid`` (never 1) and ``process.entity_id``
   (pid + start time: the sensor refuses a pid that another process has since taken);
3. never the hub itself or a process it runs (its console), nor a protected process
   (``response.protected_processes``, names or executable paths), and a process already
   asked for is not asked for again;
4. at most ``response.max_kills_per_minute`` per sensor (host);
5. ``dry-run`` (per rule, or ``response.dry_run``): the sensor checks everything and reports
   what it would have killed.

The command goes to the sensor that reported the event, on its authenticated connection (the
ROUTER socket's peer of the batch), before the batch is acknowledged. The alert itself says
what happened (``threatseer.response.status``: sent, dry-run, refused, duplicate, and
``threatseer.response.reason``); the sensor reports the kill as its own ``kill`` event. Every
decision is logged (refusals of rules the config does not allow at most once a minute per
rule, with a count).

The bundle's exec rules (enforce.yaml) go to every sensor as an :class:`ExecPolicy` (on its
first batch, after each bundle or policy change, and again every ``response.policy_resend_s``
so that a lost frame is not lost for good) and are enforced by its kernel at exec.
Where that cannot happen (a kernel that refuses the program, ``enforce_in_kernel: false``, a
sensor on an older version), the exec event arrives without ``threatseer.enforce.verdict``,
carries the exec rule's indicator (hub/engines/execrules.py) and the hub kills through the
path above: the exec rules are hub kill rules too.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import os
import time
from collections import OrderedDict
from collections.abc import Callable, Collection
from typing import Any

from threatseer.common import ecs, wire
from threatseer.common.hostid import machine_id
from threatseer.common.protect import protected_by
from threatseer.common.ratelimit import RateLimit
from threatseer.hub.config import ResponseConfig
from threatseer.hub.rules.model import KILL, Bundle, ExecRule

log = logging.getLogger("threatseer.hub.response")
Event = dict[str, Any]
Send = Callable[[bytes, bytes], bool]
MAX_PEERS = 20_000
MAX_SENSORS = 10_000
REMEMBERED = 4096  # processes already asked for
NOT_ALLOWED_LOG_S = 60.0
# Events that name no process to kill, or one that is gone.
_NO_TARGET = frozenset((ecs.EXIT, ecs.KILL, ecs.SENSOR_HEALTH, ecs.SENSOR_LOSS,
                        ecs.CONTAINER_CREATED, ecs.CONTAINER_DESTROYED))


class Responder:
    def __init__(self, cfg: ResponseConfig, send: Send, host_id: str | None = None,
                 helper_pids: Callable[[], Collection[int | None]] = tuple,
                 command_id: Callable[[Event, str], str] | None = None) -> None:
        self.cfg = cfg
        self._send = send
        # ids of the commands (default: unique to this process; a cluster's scorers derive
        # them from the alert, so a replayed decision repeats its id: hub/cluster/commands.py)
        self._command_id = command_id
        self.host_id = machine_id() if host_id is None else host_id
        self.own_pid = os.getpid()
        self.helper_pids = helper_pids  # the pids of the hub's own child processes, now
        self.actions: dict[str, str] = {}  # every rule with an action (bundle)
        self.kill_rules: dict[str, str] = {}  # allowed: rule -> "kill" | "dry-run"
        self.exec_rules: list[tuple[int, ExecRule]] = []  # allowed, with their ids
        self.policy = wire.ExecPolicy(version="none")
        self._policy_frame = wire.encode_command(self.policy)
        # peer -> (policy version sent, when: monotonic seconds)
        self._peers: OrderedDict[bytes, tuple[str, float]] = OrderedDict()
        self._buckets: OrderedDict[str, RateLimit] = OrderedDict()
        self._asked: OrderedDict[str, None] = OrderedDict()  # entity ids asked for
        self._not_allowed_log: dict[str, tuple[float, int]] = {}
        self._ids = itertools.count(1)
        self._id_prefix = f"k-{time.time_ns():x}-"
        self.counts = {"sent": 0, "dry-run": 0, "refused": 0, "duplicate": 0}

    # ---- bundle and policy ------------------------------------------------------------
    def activate(self, bundle: Bundle) -> None:
        """Take the bundle's rules with an action and its exec rules; what the config does
        not allow is said once here."""
        allowed = self.cfg.kill_rules
        self.actions = {name: a for name, a in bundle.actions.items() if a == KILL}
        self.kill_rules = {name: allowed[name] for name in self.actions if name in allowed}
        self.exec_rules = []
        for er in bundle.exec_rules:
            # an exec the kernel let run carries the rule's indicator (hub/engines/execrules.py)
            self.actions[er.name] = KILL
            if er.name in allowed:
                self.exec_rules.append((len(self.exec_rules) + 1, er))
                self.kill_rules[er.name] = allowed[er.name]
        for name in sorted({*self.actions, *(er.name for er in bundle.exec_rules)}
                           - set(self.kill_rules)):
            log.info("rule %r has action: kill, but response.kill_rules does not name it: it "
                     "only alerts", name)
        for name in sorted(set(allowed) - set(self.kill_rules)):
            log.warning("response.kill_rules names %r, which bundle %s has no kill rule of",
                        name, bundle.manifest.name)
        if self.kill_rules:
            log.warning("response: %d rules may kill (%s)%s", len(self.kill_rules),
                        ", ".join(f"{n}: {m}" for n, m in sorted(self.kill_rules.items())),
                        "; everything a dry run (response.dry_run)" if self.cfg.dry_run else "")
        self._make_policy()

    def _make_policy(self) -> None:
        rules = tuple(wire.ExecRule(id=i, rule=er.name, prefixes=er.prefixes, kinds=er.kinds,
                                    dry_run=self.cfg.dry_run
                                    or self.kill_rules[er.name] == "dry-run")
                      for i, er in self.exec_rules)
        protected = tuple(p for p in self.cfg.protected_processes if not p.startswith("/"))
        body = wire.encode_command(wire.ExecPolicy(
            version="", rules=rules, protected=protected,
            max_kills_per_minute=self.cfg.max_kills_per_minute))
        version = hashlib.sha256(body).hexdigest()[:16]
        if version != self.policy.version:
            self.policy = wire.ExecPolicy(version=version, rules=rules, protected=protected,
                                          max_kills_per_minute=self.cfg.max_kills_per_minute)
            self._policy_frame = wire.encode_command(self.policy)
            if rules:
                log.warning("exec policy %s: %s", version, "; ".join(
                    f"{r.rule} ({'dry run' if r.dry_run else 'kill'}: "
                    f"{'/'.join(r.kinds)} under {', '.join(r.prefixes)})" for r in rules))

    def on_batch(self, peer: bytes, now: float | None = None) -> None:
        """A batch came from ``peer``: send it the exec policy if it was not sent this one
        within ``policy_resend_s`` (every sensor gets one on its first batch, even an empty
        one: a sensor that kept a policy from before a hub restart must lose it when the
        bundle has none)."""
        if not peer:
            return
        now = time.monotonic() if now is None else now
        sent = self._peers.get(peer)
        if (sent is not None and sent[0] == self.policy.version
                and now - sent[1] < self.cfg.policy_resend_s):
            self._peers.move_to_end(peer)
            return
        if self._send(peer, self._policy_frame):
            self._peers[peer] = (self.policy.version, now)
            self._peers.move_to_end(peer)
            if len(self._peers) > MAX_PEERS:
                self._peers.popitem(last=False)

    # ---- kills ------------------------------------------------------------------------
    def consider(self, events: list[Event], sensor_id: str, peer: bytes) -> None:
        """Decide, for the scored events about to be published, what to kill."""
        actions = self.actions
        if not actions:
            return
        for ev in events:
            rule = None
            for ind in ev["threatseer.indicators"]:
                name = ind.get("rule")
                if name in actions:
                    rule = name
                    if name in self.kill_rules:
                        break
            if rule is not None:
                self._decide(ev, rule, sensor_id, peer)

    def _decide(self, ev: Event, rule: str, sensor_id: str, peer: bytes) -> None:
        ev["threatseer.response.action"] = KILL
        ev["threatseer.response.rule"] = rule
        mode = self.kill_rules.get(rule)
        if mode is None:
            self._set(ev, "refused", "not allowed by the hub's response.kill_rules")
            self._log_not_allowed(rule)
            return
        pid, entity = ev.get("process.pid"), ev.get("process.entity_id")
        name, exe = str(ev.get("process.name") or ""), str(ev.get("process.executable") or "")
        reason = ""
        if ev.get("event.action") in _NO_TARGET:
            reason = "the event names no live process"
        elif type(pid) is not int or not 1 < pid < 1 << 22 or not isinstance(entity, str) \
                or not 0 < len(entity) <= 64:
            reason = "no process identity (process.pid and process.entity_id)"
        elif ev.get("host.id") == self.host_id and self.host_id and (
                pid == self.own_pid or pid in self.helper_pids()):
            # the hub and the processes it runs (its console child)
            reason = "the hub itself" if pid == self.own_pid else "a process of the hub"
        elif entry := protected_by(name, exe, self.cfg.protected_processes):
            reason = f"protected process ({entry})"
        if reason:
            self._set(ev, "refused", reason)
            self._log(logging.INFO, ev, sensor_id, rule, f"refused: {reason}")
            return
        if entity in self._asked:
            self._set(ev, "duplicate", "already asked for this process")
            log.debug("kill for rule %r: entity %s already asked for", rule, entity)
            return
        dry = self.cfg.dry_run or mode == "dry-run"
        if not dry and not self._bucket(sensor_id).take():
            reason = f"rate limit ({self.cfg.max_kills_per_minute} per minute for this sensor)"
            self._set(ev, "refused", reason)
            self._log(logging.WARNING, ev, sensor_id, rule, f"refused: {reason}")
            return
        cmd_id = (self._command_id(ev, rule) if self._command_id is not None
                  else self._id_prefix + str(next(self._ids)))
        cmd = wire.KillCommand(id=cmd_id, pid=pid, entity_id=entity,
                               event_id=str(ev.get("event.id", ""))[:512], rule=rule[:512],
                               dry_run=dry, executable=exe[:4096])
        if not peer or not self._send(peer, wire.encode_command(cmd)):
            self._set(ev, "refused", "the sensor's connection is gone")
            self._log(logging.WARNING, ev, sensor_id, rule, "not sent: connection gone")
            return
        self._asked[entity] = None
        if len(self._asked) > REMEMBERED:
            self._asked.popitem(last=False)
        ev["threatseer.response.id"] = cmd_id
        self._set(ev, "dry-run" if dry else "sent", "")
        self._log(logging.INFO if dry else logging.WARNING, ev, sensor_id, rule,
                  f"{'dry run' if dry else 'kill'} sent ({cmd_id})")

    def forget(self, entities: Collection[str]) -> None:
        """Forget that these processes were asked for: their commands were not delivered
        (a cluster scorer's transaction failed), so deciding again sends them again."""
        for entity in entities:
            self._asked.pop(entity, None)

    def _set(self, ev: Event, status: str, reason: str) -> None:
        ev["threatseer.response.status"] = status
        if reason:
            ev["threatseer.response.reason"] = reason
        self.counts[status] += 1

    def _bucket(self, sensor_id: str) -> RateLimit:
        b = self._buckets.get(sensor_id)
        if b is None:
            b = self._buckets[sensor_id] = RateLimit(self.cfg.max_kills_per_minute)
            if len(self._buckets) > MAX_SENSORS:
                self._buckets.popitem(last=False)
        return b

    def _log(self, level: int, ev: Event, sensor_id: str, rule: str, what: str) -> None:
        log.log(level, "response for rule %r on sensor %s, pid %s (%s, entity %s), alert %s: %s",
                rule, sensor_id, ev.get("process.pid"),
                ev.get("process.executable") or ev.get("process.name") or "?",
                ev.get("process.entity_id", "-"), ev.get("event.id", "-"), what)

    def _log_not_allowed(self, rule: str) -> None:
        now = time.monotonic()
        last, count = self._not_allowed_log.get(rule, (-1e18, 0))
        if now - last >= NOT_ALLOWED_LOG_S:
            log.info("rule %r fired with action: kill, not carried out (not in "
                     "response.kill_rules)%s", rule,
                     f"; {count} more times since last said" if count else "")
            self._not_allowed_log[rule] = (now, 0)
        else:
            self._not_allowed_log[rule] = (last, count + 1)

