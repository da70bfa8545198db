"""Loading bundles: compiled rules, exceptions, output templates, static data, errors with file:line."""

from __future__ import annotations

from pathlib import Path

import pytest
from rules_helpers import SIMPLE_RULES, write_bundle

from threatseer.hub.rules.bundle import BundleError, load_bundle
from threatseer.hub.rules.testing import run_tests

WEB_SHELL = {"event.action": "exec", "process.name": "sh", "process.parent.name": "nginx",
             "process.args": ["sh", "-c", "id"], "host.name": "web2"}


def test_simple_bundle_matches_with_indicator_fields(simple_bundle: Path) -> None:
    bundle = load_bundle(simple_bundle)
    assert bundle.manifest.name == "test" and bundle.manifest.version == "1.0.0"
    assert len(bundle.digest) == 64
    [ind] = bundle.ruleset.match(WEB_SHELL)
    assert (ind.engine, ind.rule, ind.type, ind.score) == ("dynamic", "shell_from_web", "query", 70)
    assert ind.tags == ("attack.t1505.003",)
    assert ind.description == "web server spawns a shell"
    assert ind.extra_info["output"] == "nginx -> sh (sh -c id)"
    assert bundle.ruleset.match({**WEB_SHELL, "process.parent.name": "sshd"}) == []
    assert run_tests(bundle) == (2, [])


def test_exception_tuple_suppresses_only_the_full_tuple(simple_bundle: Path) -> None:
    rs = load_bundle(simple_bundle).ruleset
    health = {**WEB_SHELL, "host.name": "web1", "process.args": ["sh", "/srv/health.sh"]}
    assert rs.match(health) == []
    assert len(rs.match({**health, "host.name": "web2"})) == 1
    assert len(rs.match({**health, "process.args": ["sh", "/srv/other.sh"]})) == 1


def test_disabled_rule_is_not_compiled_and_its_tests_skipped(tmp_path: Path) -> None:
    text = SIMPLE_RULES.replace("    score: 70\n", "    score: 70\n    enabled: false\n")
    bundle = load_bundle(write_bundle(tmp_path / "b", {"rules/main.yaml": text}))
    assert len(bundle.ruleset) == 0 and bundle.tests == []


def test_failing_embedded_test_is_reported_with_file_and_line(tmp_path: Path) -> None:
    text = SIMPLE_RULES.replace("process.parent.name: sshd}", "process.parent.name: nginx}")
    bundle = load_bundle(write_bundle(tmp_path / "b", {"rules/main.yaml": text}))
    count, failures = run_tests(bundle)
    assert count == 2 and len(failures) == 1
    assert "rules/main.yaml:20: rule 'shell_from_web' matched but must not" in failures[0]


def test_static_data(tmp_path: Path) -> None:
    bundle = load_bundle(write_bundle(tmp_path / "b", {"static.yaml": """\
        risky_processes:
          - {name: nc, reason: reverse shell, score: 70, tags: [attack.t1059]}
        sensitive_files:
          - {glob: /etc/shadow, reason: hashes, read_score: 50, write_score: 80}
        iocs:
          sha256: {"aa00000000000000000000000000000000000000000000000000000000000000": bad}
          networks: {"203.0.113.0/24": c2}
          domains: {"Evil.Example.": c2}
        """}))
    s = bundle.static
    assert s.risky_processes["nc"].score == 70 and s.risky_processes["nc"].tags == ("attack.t1059",)
    assert s.sensitive_files[0].glob == "/etc/shadow" and s.sensitive_files[0].write_score == 80
    assert "203.0.113.0/24" in s.iocs.networks and "evil.example" in s.iocs.domains


# One Sigma rule in two files would add its score twice: the loader refuses the second.
SIGMA_RULE = """\
title: Shadow read
id: 5f8f6c4a-0000-4000-8000-000000000001
logsource: {product: linux, category: process_creation}
detection:
  sel: {Image|endswith: /cat, CommandLine|contains: /etc/shadow}
  condition: sel
level: high
"""


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        ({"rules/a.yaml": "rules:\n  - rule: x\n    condition: process.name = \n    score: 1\n"},
         "rules/a.yaml:2: rule 'x': condition: column 15: expected a value"),
        ({"rules/a.yaml": "rules:\n  - rule: x\n    condition: a = 1\n  - rule: x\n    condition: a = 2\n"},
         "rules/a.yaml:4: rule 'x': defined twice (first at"),
        ({"rules/a.yaml": "rules:\n  - rule: x\n    conditon: a = 1\n"},
         "rules/a.yaml:2: rule 'x': unknown key 'conditon'"),
        ({"rules/a.yaml": "rules:\n  - rule: x\n    condition: a = 1\n    score: high\n"},
         "rules/a.yaml:2: rule 'x': score must be an integer"),
        ({"rules/a.yaml": "rules:\n  - rule: x\n    condition: [a = 1\n"},
         "rules/a.yaml:4: invalid YAML"),
        ({"rules/a.yaml": "macros:\n  m1: m2 and true\n  m2: m1\nrules:\n  - rule: x\n    condition: m1\n"},
         "macro cycle"),
        ({"rules/a.yaml": "rules:\n  - rule: x\n    condition: a in nolist\n"},
         "rules/a.yaml:2: rule 'x': condition: column 6: unknown list 'nolist'"),
        ({"tests/t.yaml": "tests:\n  - rule: nope\n    match: [{a: 1}]\n"},
         "tests/t.yaml:2: test for unknown rule 'nope'"),
        ({"static.yaml": "iocs:\n  networks: {'not-an-ip': x}\n"},
         "static.yaml:2: iocs.networks: not an IP or CIDR"),
        ({"manifest.yaml": "name: x\nversion: '1'\nmin_threatseer: '99.0'\n"},
         "needs threatseer >= 99.0"),
        ({"rules/a.yaml": "rules:\n  - rule: x\n    condition: a = 1\n    exceptions:\n"
                          "      - {fields: [a, b], values: [[1]]}\n"},
         "rules/a.yaml:5: rule 'x': exception '': [1] has 1 values for 2 fields"),
        ({"sigma/a.yml": SIGMA_RULE, "sigma/copy/a.yml": SIGMA_RULE},
         "sigma/copy/a.yml:1: Sigma rule 5f8f6c4a-0000-4000-8000-000000000001 defined twice"),
    ],
)
def test_errors_name_file_line_and_rule(tmp_path: Path, files: dict, expected: str) -> None:
    root = write_bundle(tmp_path / "b", files)
    with pytest.raises(BundleError) as err:
        load_bundle(root)
    assert any(expected in e for e in err.value.errors), err.value.errors
    assert all(e.startswith(str(root)) for e in err.value.errors)


def test_all_errors_are_reported_at_once(tmp_path: Path) -> None:
    root = write_bundle(tmp_path / "b", {
        "rules/a.yaml": "rules:\n  - rule: x\n    condition: a =\n",
        "rules/b.yaml": "rules:\n  - rule: y\n    condition: b in nolist\n"})
    with pytest.raises(BundleError) as err:
        load_bundle(root)
    assert len(err.value.errors) == 2


def test_missing_manifest(tmp_path: Path) -> None:
    (tmp_path / "b").mkdir()
    with pytest.raises(BundleError, match="manifest.yaml: missing"):
        load_bundle(tmp_path / "b")
