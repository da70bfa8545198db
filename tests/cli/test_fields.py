"""`threatseer fields` prints every field of the schema with its type and description."""

from __future__ import annotations

import json
import subprocess

from threatseer.common import ecs


def run(cmd: list[str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=60,
                          )


def test_every_field_with_type_and_description(threatseer_cmd: list[str]) -> None:
    proc = run(threatseer_cmd, "fields")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].split() == ["FIELD", "TYPE", "DESCRIPTION"]
    rows = {line.split()[0]: line for line in lines[1:] if line and not line.startswith(" ")}
    for name, field in ecs.FIELDS.items():
        kind = field.type + ("[]" if field.array else "")
        assert name in rows, name
        assert rows[name].split(maxsplit=2)[1:] == [kind, field.description], rows[name]
    assert "Aliases in rule conditions: process.ancestors = threatseer.ancestors" in proc.stdout


def test_json_markdown_and_prefixes(threatseer_cmd: list[str]) -> None:
    doc = json.loads(run(threatseer_cmd, "fields", "--json").stdout)
    assert [(d["name"], d["type"], d["array"], d["description"]) for d in doc] == [
        (n, f.type, f.array, f.description) for n, f in ecs.FIELDS.items()]
    some = json.loads(run(threatseer_cmd, "fields", "--json", "dns.", "user.").stdout)
    assert {d["name"] for d in some} == {n for n in ecs.FIELDS
                                         if n.startswith(("dns.", "user."))}
    md = run(threatseer_cmd, "fields", "--markdown", "process.args").stdout.splitlines()
    assert md[:2] == ["| field | type | description |", "| --- | --- | --- |"]
    assert md[2].startswith("| `process.args` | keyword[] | argv as a list.")
