"""The hub's side of the kill action over real ZeroMQ (hub/response.py): the exec policy goes
to each sensor connection, kill commands go to the connection the event came on, and only for
rules the config allows, under the per-sensor rate limit; exec rules are enforced through the
hub when the sensor's kernel did not act."""

from __future__ import annotations

import time

import zmq
from hub_helpers import exec_event

from threatseer.common import wire
from threatseer.hub.config import ResponseConfig
from threatseer.hub.rules.bundle import load_files


def bundle():  # type: ignore[no-untyped-def]
    return load_files({
        "manifest.yaml": b"name: t\nversion: '1'\n",
        "rules/r.yaml": b"""rules:
  - rule: kill_evil
    condition: event.action = exec and process.name = evil
    score: 90
    action: kill
  - rule: fetch_then_shell
    condition: >-
      sequence by process.parent.entity_id within 60s
        [event.action = exec and process.name = fetcher]
        [event.action = exec and process.name = shellish]
    score: 80
    action: kill
  - rule: evil_but_not_allowed
    condition: event.action = exec and process.name = meh
    score: 90
    action: kill
""",
        "enforce.yaml": b"exec:\n  - rule: no_dev_shm\n    prefixes: [/dev/shm/]\n",
    }, "test")


class Sensor:
    """A DEALER that speaks the wire format and collects what the hub sends back."""

    def __init__(self, ctx: zmq.Context, ep: str, sid: str) -> None:
        self.sock = ctx.socket(zmq.DEALER)
        self.sock.connect(ep)
        self.sid, self.seq = sid, 0
        self.replies: list = []

    def send(self, *events: dict) -> None:
        self.seq += 1
        self.sock.send_multipart(wire.encode(wire.Batch(
            self.sid, self.seq, list(events), epoch=7, base=self.seq,
            common={"host.id": "other-host"})))

    def commands(self, n: int, timeout: float = 5.0) -> list:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and len(self.commands_now()) < n:
            if self.sock.poll(100):
                self.replies.append(wire.decode_reply(self.sock.recv()))
        return self.commands_now()

    def commands_now(self) -> list:
        return [r for r in self.replies if not isinstance(r, tuple)]


def killable(name: str, pid: int, **fields) -> dict:
    return exec_event(f"/opt/x/{name}", **{"process.name": name, "process.pid": pid,
                                           "process.entity_id": f"ent-{pid}", **fields})


def test_policy_and_kill_commands_go_to_the_reporting_sensor_only(start_hub, zctx) -> None:
    cfg = ResponseConfig(kill_rules={"kill_evil": "kill", "no_dev_shm": "dry-run"},
                         max_kills_per_minute=2)
    hub = start_hub(bundle_obj=bundle(), response=cfg)
    a = Sensor(zctx, hub.ingest.endpoint, "sensor-a")
    b = Sensor(zctx, hub.ingest.endpoint, "sensor-b")
    a.send(killable("evil", 4242))
    b.send(killable("ok", 4343))
    (policy, kill) = a.commands(2)
    assert isinstance(policy, wire.ExecPolicy)
    assert [(r.rule, r.prefixes, r.kinds, r.dry_run) for r in policy.rules] == [
        ("no_dev_shm", ("/dev/shm/",), ("any",), True)]
    assert isinstance(kill, wire.KillCommand)
    assert (kill.pid, kill.entity_id, kill.rule, kill.dry_run) == (4242, "ent-4242",
                                                                   "kill_evil", False)
    assert [type(c) for c in b.commands(1)] == [wire.ExecPolicy]  # policy, no kill
    # not allowed, already asked, rate limited, exited: no command
    a.send(killable("meh", 1), killable("evil", 4242), killable("evil", 4244),
           killable("evil", 4245), {**killable("evil", 4246), "event.action": "exit"})
    assert len(a.commands(4, timeout=1.0)) == 3  # policy, 4242, and 4244 (the 2nd per minute)
    assert [c.pid for c in a.commands_now()[1:]] == [4242, 4244]
    # an exec the sensor's kernel did not act on, under an exec rule: through the hub
    b.send(killable("tool", 5000, **{"process.executable": "/dev/shm/tool"}))
    b.send(killable("tool", 5001, **{"process.executable": "/dev/shm/tool",
                                     "threatseer.enforce.verdict": "killed"}))
    cmds = b.commands(2)
    assert [(c.pid, c.rule, c.dry_run) for c in cmds[1:]] == [(5000, "no_dev_shm", True)]
    time.sleep(0.3)
    b.commands(3, timeout=0.3)
    assert len(b.commands_now()) == 2  # none for 5001
    assert hub.responder.counts["sent"] == 2 and hub.responder.counts["dry-run"] == 1
    for s in (a, b):
        s.sock.close(0)


def test_a_sequence_with_action_kill_kills_the_process_that_completes_it(start_hub,
                                                                        zctx) -> None:
    hub = start_hub(bundle_obj=bundle(),
                    response=ResponseConfig(kill_rules={"fetch_then_shell": "kill"}))
    a = Sensor(zctx, hub.ingest.endpoint, "sensor-a")
    parent = {"process.parent.entity_id": "ent-parent"}
    a.send(killable("fetcher", 6000, **parent))  # the first step alone: nothing to kill
    a.send(killable("shellish", 6001, **{"process.parent.entity_id": "ent-other"}))
    a.send(killable("shellish", 6002, **parent))  # completes the sequence
    cmds = a.commands(2)
    assert [(c.pid, c.entity_id, c.rule) for c in cmds[1:]] == [
        (6002, "ent-6002", "fetch_then_shell")]
    a.commands(3, timeout=0.5)
    assert len(a.commands_now()) == 2
    a.sock.close(0)


def test_nothing_is_killed_without_kill_rules(start_hub, zctx) -> None:
    hub = start_hub(bundle_obj=bundle())
    a = Sensor(zctx, hub.ingest.endpoint, "sensor-a")
    a.send(killable("evil", 4242), killable("tool", 5000,
                                            **{"process.executable": "/dev/shm/tool"}))
    a.commands(3, timeout=1.5)
    (policy,) = a.commands_now()
    assert policy.rules == ()  # an empty policy: enforcement off on that sensor
    # kill_evil and the exec rule no_dev_shm fired (the sensor's kernel did not act): neither
    # is allowed
    assert hub.responder.counts["refused"] == 2
    a.sock.close(0)


def test_never_the_hub_nor_a_process_it_runs() -> None:
    import os

    from threatseer.hub.response import Responder

    sent: list = []
    r = Responder(ResponseConfig(kill_rules={"kill_evil": "kill"}),
                  lambda peer, frame: sent.append(frame) or True, host_id="this-host",
                  helper_pids=lambda: (7001, None))  # e.g. its console child
    r.activate(bundle())
    here = {"host.id": "this-host", "threatseer.indicators": [{"rule": "kill_evil"}]}
    hub = {**killable("evil", os.getpid()), **here}
    helper = {**killable("evil", 7001), **here}
    elsewhere = {**helper, "host.id": "other-host"}  # same pid on another host: not the hub
    r.consider([hub, helper, elsewhere], "s", b"peer")
    assert hub["threatseer.response.reason"] == "the hub itself"
    assert helper["threatseer.response.reason"] == "a process of the hub"
    assert elsewhere["threatseer.response.status"] == "sent"
    assert [wire.decode_reply(f).pid for f in sent] == [7001]


def test_the_policy_goes_again_after_policy_resend_s(start_hub, zctx) -> None:
    """A policy frame lost on its way would otherwise leave that sensor without it until the
    policy changes: each connection is sent it again on its first batch after
    policy_resend_s, and not sooner."""
    hub = start_hub(bundle_obj=bundle(),
                    response=ResponseConfig(kill_rules={"no_dev_shm": "kill"},
                                            policy_resend_s=1.0))
    a = Sensor(zctx, hub.ingest.endpoint, "sensor-a")
    a.send(killable("ok", 100))
    (first,) = a.commands(1)
    a.send(killable("ok", 101))  # within the interval: nothing
    assert len(a.commands(2, timeout=0.5)) == 1
    time.sleep(0.6)
    a.send(killable("ok", 102))
    policies = a.commands(2)
    assert [type(c) for c in policies] == [wire.ExecPolicy, wire.ExecPolicy]
    assert policies[1] == first
    a.sock.close(0)
