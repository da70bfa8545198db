"""`rules validate --json` and `rules test --json` for CI, and a local layer on the command
line (validate, test, build, replay --local), as subprocesses."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from rules_helpers import DEFAULT_BUNDLE, SIMPLE_RULES, write_bundle


def run(cmd: list[str], *args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*cmd, *map(str, args)], capture_output=True, text=True, timeout=120)


def layer(tmp_path: Path, rules: str) -> Path:
    root = write_bundle(tmp_path / "local", {"rules/site.yaml": rules})
    (root / "manifest.yaml").write_text("name: site\nversion: '3'\nlayer: local\n")
    return root


def test_validate_json(threatseer_cmd: list[str], tmp_path: Path) -> None:
    ok = run(threatseer_cmd, "rules", "validate", "--json", DEFAULT_BUNDLE)
    assert ok.returncode == 0, ok.stderr
    doc = json.loads(ok.stdout)
    assert doc["ok"] is True and doc["name"] == "threatseer-default" and doc["layer"] == "base"
    assert doc["rules"] > 100 and doc["tests"] > 100 and doc["errors"] == []
    assert len(doc["digest"]) == 64 and doc["base"] is None
    bad = write_bundle(tmp_path / "bad", {"rules/a.yaml": (
        "rules:\n  - rule: r1\n    condition: process.name in\n"
        "  - rule: r2\n    condition: event.action = exec\n    score: high\n")})
    r = run(threatseer_cmd, "rules", "validate", "--json", bad)
    assert r.returncode == 1 and r.stderr == ""
    doc = json.loads(r.stdout)
    assert doc["ok"] is False
    assert [(e["file"], e["line"], e["rule"]) for e in doc["errors"]] == [
        (f"{bad}/rules/a.yaml", 2, "r1"), (f"{bad}/rules/a.yaml", 4, "r2")]
    assert doc["errors"][1]["message"] == "score must be an integer, not 'high'"


def test_test_json_reports_each_failure(threatseer_cmd: list[str], tmp_path: Path) -> None:
    text = SIMPLE_RULES.replace("process.parent.name: sshd}", "process.parent.name: nginx}")
    root = write_bundle(tmp_path / "b", {"rules/a.yaml": text})
    r = run(threatseer_cmd, "rules", "test", "--json", root)
    assert r.returncode == 1
    doc = json.loads(r.stdout)
    assert (doc["ok"], doc["total"], doc["passed"], doc["failed"]) == (False, 2, 1, 1)
    (failure,) = doc["failures"]
    assert failure["rule"] == "shell_from_web" and failure["expect"] == "no_match"
    assert failure["file"] == f"{root}/rules/a.yaml" and failure["line"] == 20
    assert failure["event"]["process.parent.name"] == "nginx"
    passing = run(threatseer_cmd, "rules", "test", "--json", DEFAULT_BUNDLE)
    assert passing.returncode == 0 and json.loads(passing.stdout)["failed"] == 0


def test_a_local_layer_on_the_command_line(threatseer_cmd: list[str], tmp_path: Path) -> None:
    site = layer(tmp_path, """\
rules:
  - rule: shadow_file_read
    exceptions: [{name: backup, fields: process.name, comps: in, values: [borg]}]
    override: {exceptions: append}
    tests:
      no_match: [{event.action: open, file.path: /etc/shadow, process.name: borg}]
      match: [{event.action: open, file.path: /etc/shadow, process.name: cat}]
""")
    # validate/test default to the shipped bundle as the base, or take --base
    v = run(threatseer_cmd, "rules", "validate", "--json", site)
    doc = json.loads(v.stdout)
    assert v.returncode == 0 and doc["layer"] == "local" and doc["name"] == "site"
    assert doc["base"]["name"] == "threatseer-default"
    t = run(threatseer_cmd, "rules", "test", site, "--base", DEFAULT_BUNDLE)
    assert t.returncode == 0, t.stderr
    passed, total = t.stdout.split()[0].split("/")
    assert passed == total and int(total) > 100  # the base's tests and the layer's two
    out = tmp_path / "site.tar.gz"
    b = run(threatseer_cmd, "rules", "build", site, "-o", out)
    assert b.returncode == 0 and b.stdout.startswith(f"{out}: site 3 content "), b.stderr
    # a failing layer test fails `rules test`, with the layer's file and line
    broken = layer(tmp_path / "x", """\
rules:
  - rule: shadow_file_read
    enabled: true
    tests:
      no_match: [{event.action: open, file.path: /etc/shadow, process.name: cat}]
""")
    t = run(threatseer_cmd, "rules", "test", "--json", broken)
    doc = json.loads(t.stdout)
    assert t.returncode == 1 and doc["failed"] == 1
    assert doc["failures"][0]["layer"] == "local"
    assert doc["failures"][0]["file"] == f"{broken}/rules/site.yaml"
    # replay backtests the stack
    events = tmp_path / "events.jsonl"
    events.write_text("\n".join(json.dumps(e) for e in (
        {"@timestamp": "2026-01-01T00:00:00Z", "event": {
            "kind": "event", "category": ["file"], "type": ["access"], "action": "open"},
         "process": {"pid": 1, "name": name}, "file": {"path": "/etc/shadow"},
         "threatseer": {"open": {"flags": ["read"]}}} for name in ("cat", "borg"))) + "\n")
    rp = run(threatseer_cmd, "replay", events, "--local", site, "--all")
    assert rp.returncode == 0, rp.stderr
    fired = {}
    for line in rp.stdout.splitlines():
        doc = json.loads(line)
        fired[doc["process"]["name"]] = {i["rule"] for i in doc["threatseer"]["indicators"]}
    assert "shadow_file_read" in fired["cat"] and "shadow_file_read" not in fired["borg"]
