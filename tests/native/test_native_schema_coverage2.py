"""The coverage-II kinds against the schema: every event the hub would refuse (missing a
REQUIRED field) or carrying a field ecs.FIELDS does not document fails here."""

from __future__ import annotations

import os

from threatseer.common import ecs
from threatseer.hub.validate import problems

NEW_ACTIONS = set(ecs.REQUIRED) - {
    ecs.EXEC, ecs.FORK, ecs.EXIT, ecs.OPEN, ecs.CONNECT, ecs.ACCEPT, ecs.LISTEN, ecs.DNS_QUERY,
    ecs.CONTAINER_CREATED, ecs.CONTAINER_STARTED, ecs.CONTAINER_DESTROYED, ecs.SENSOR_HEALTH,
    ecs.SENSOR_LOSS}


def documented(key: str) -> bool:
    return ecs.field(key) is not None


def test_new_kinds_are_complete_and_documented(events, probe, tmp_path):
    probe.set_watched_paths([f"{tmp_path}/"])
    try:
        target = tmp_path / "f"
        target.write_text("x")
        os.chmod(target, 0o4755)
        os.rename(target, tmp_path / "g")
        os.close(os.memfd_create("ts-schema", 0))
        pid = os.fork()
        if pid == 0:
            os.setresuid(1000, 0, 0)
            os.setuid(0)
            os._exit(0)
        os.waitpid(pid, 0)
        seen = events.wait(lambda e: e["event.action"] == "setuid" and e["process.pid"] == pid)
        assert seen
        events.settle(0.2)
    finally:
        probe.set_watched_paths([])
    ours = [e for e in events.events if e["event.action"] in NEW_ACTIONS
            and e["process.pid"] in (os.getpid(), pid)]
    assert {e["event.action"] for e in ours} >= {"create", "chmod", "rename", "memfd-create",
                                                 "setuid"}
    for ev in ours:
        assert problems([ev]) == [], ev
        assert [k for k in ev if not documented(k)] == [], ev["event.action"]
        assert (ev["event.category"], ev["event.type"]) == tuple(
            ecs.CATEGORIES[ev["event.action"]])
