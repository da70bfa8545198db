"""``action: kill`` on every kind of rule, and enforce.yaml's exec rules: what loads, and
the errors (file, line, rule) for what cannot."""

from __future__ import annotations

from pathlib import Path

import pytest
from rules_helpers import write_bundle

from threatseer.hub.rules.bundle import BundleError, load_bundle

SIGMA = """\
title: Evil Tool
id: 11111111-2222-3333-4444-555555555555
logsource: {category: process_creation, product: linux}
detection:
  sel: {Image|endswith: /eviltool}
  condition: sel
level: high
"""


def test_every_kind_of_rule_can_carry_kill(tmp_path: Path) -> None:
    b = load_bundle(write_bundle(tmp_path, {
        "rules/r.yaml": """\
            rules:
              - rule: q
                condition: event.action = exec and process.name = x
                score: 10
                action: kill
              - rule: plain
                condition: event.action = exec and process.name = y
                score: 10
              - rule: seq
                condition: >-
                  sequence by process.parent.entity_id within 60s
                    [event.action = exec and process.name = curl]
                    [event.action = exec and process.name = sh]
                score: 80
                action: kill
            sigma:
              overrides:
                Evil Tool: {action: kill}
            """,
        "sigma/evil.yml": SIGMA,
        "static.yaml": """\
            risky_processes:
              - {name: xmrig, score: 50, action: kill}
            sensitive_files:
              - {glob: /etc/shadow, read_score: 50, write_score: 80, action: kill}
            iocs:
              sha256:
                """ + "a" * 64 + """: {description: known miner, action: kill}
                """ + "b" * 64 + """: just alert
            """,
        "enforce.yaml": """\
            exec:
              - rule: no_dev_shm
                description: programs run from /dev/shm
                prefixes: [/dev/shm/]
              - rule: fileless
                memfd: true
                deleted: true
            """,
    }))
    assert b.actions == {"q": "kill", "seq": "kill", "Evil Tool": "kill", "risky_process:xmrig": "kill",
                         "/etc/shadow": "kill", "sha256:" + "a" * 64: "kill"}
    assert b.static.iocs.sha256["a" * 64] == "known miner"
    assert [(r.name, r.prefixes, r.kinds) for r in b.exec_rules] == [
        ("no_dev_shm", ("/dev/shm/",), ("any",)), ("fileless", ("/",), ("memfd", "deleted"))]


@pytest.mark.parametrize(("files", "expected"), [
    ({"rules/r.yaml": "rules:\n  - rule: q\n    condition: event.action = exec\n"
                      "    action: explode\n"},
     "rules/r.yaml:2: rule 'q': action must be one of kill, not 'explode'"),
    ({"rules/r.yaml": "rules:\n  - rule: s\n    condition: sequence by process.pid within 5s "
                      "[event.action = exec] [event.action = exit]\n    action: stop\n"},
     "rules/r.yaml:2: rule 's': action must be one of kill, not 'stop'"),
    ({"enforce.yaml": "exec:\n  - rule: all\n    prefixes: [/]\n"},
     "enforce.yaml:2: rule 'all': prefixes: '/' would deny the system's own programs"),
    ({"enforce.yaml": "exec:\n  - rule: usr\n    prefixes: [/usr/]\n"},
     "would deny the system's own programs"),
    ({"enforce.yaml": "exec:\n  - rule: x\n"},
     "enforce.yaml:2: rule 'x': prefixes: a list of 1 to 64 absolute path prefixes"),
    ({"enforce.yaml": "exec:\n  - rule: x\n    prefixes: [tmp/]\n    speed: 3\n"},
     "rule 'x': unknown key 'speed'"),
    ({"enforce.yaml": "exec:\n  - rule: x\n    prefixes: [/a/*/b]\n"},
     "without '*'"),
    ({"enforce.yaml": "exec:\n  - rule: q\n    prefixes: [/dev/shm/]\n",
      "rules/r.yaml": "rules:\n  - rule: q\n    condition: event.action = exec\n"},
     "rule 'q': the name of another rule"),
])
def test_bad_actions_and_exec_rules_are_named(tmp_path: Path, files: dict,
                                              expected: str) -> None:
    with pytest.raises(BundleError) as err:
        load_bundle(write_bundle(tmp_path, files))
    assert expected in str(err.value)
