"""A local rules layer compiled on a base bundle (hub/rules/local_layer.py), and exceptions
with comparison operators (comps), through the same matcher the hub runs."""

from __future__ import annotations

from pathlib import Path

import pytest
from rules_helpers import DEFAULT_BUNDLE, SIMPLE_RULES, write_bundle

from threatseer.hub.rules.bundle import BundleError, load_bundle
from threatseer.hub.rules.testing import run_tests

LOCAL_MANIFEST = "name: site\nversion: '1'\nlayer: local\n"


def local(tmp_path: Path, text: str, manifest: str = LOCAL_MANIFEST,
          extra: dict[str, str] | None = None) -> Path:
    root = tmp_path / "local"
    write_bundle(root, {"rules/local.yaml": text, **(extra or {})})
    (root / "manifest.yaml").write_text(manifest)
    return root


def fired(bundle, **event) -> dict[str, int]:  # type: ignore[no-untyped-def]
    """rule name -> score of the rules ``event`` fires (the hub's own matcher)."""
    from threatseer.hub.rules.bundle import complete_event

    return {r.name: r.score for r in bundle.ruleset.matching_rules(complete_event(event))}


SHADOW_CAT = {"event.action": "open", "file.path": "/etc/shadow",
              "threatseer.open.flags": ["read"], "process.name": "cat"}


def test_lists_macros_and_rules_are_appended_or_replaced(tmp_path: Path) -> None:
    layer = local(tmp_path, """\
        lists:
          shells: {items: [fish], override: append}
        macros:
          spawned: {condition: "or event.action = fork", override: append}
        rules:
          - rule: shell_from_web
            score: 5
            tags: [site.reviewed]
            exceptions:
              - name: staging
                fields: [host.name]
                comps: [startswith]
                values: [[staging-]]
            override: {score: replace, tags: append, exceptions: append}
            tests:
              match: [{event.action: exec, process.name: fish, process.parent.name: nginx}]
              no_match: [{event.action: exec, process.name: sh, process.parent.name: nginx,
                          host.name: staging-3}]
          - rule: site_rule
            condition: spawned and process.name = site-tool
            score: 7
    """)
    base = write_bundle(tmp_path / "base", {"rules/main.yaml": SIMPLE_RULES})
    plain = load_bundle(base)
    stack = load_bundle(base, layer)
    ev = {"event.action": "exec", "process.name": "fish", "process.parent.name": "nginx"}
    assert fired(plain, **ev) == {}
    assert fired(stack, **ev) == {"shell_from_web": 5}
    # the base's own exception still holds; the local one is added
    assert fired(stack, **{**ev, "process.name": "sh", "host.name": "web1",
                           "process.args": ["/srv/health.sh"]}) == {}
    assert fired(stack, **{**ev, "process.name": "sh", "host.name": "staging-1"}) == {}
    assert fired(stack, **{**ev, "process.name": "sh", "host.name": "prod-1"}) == {
        "shell_from_web": 5}
    assert stack.ruleset.by_name["shell_from_web"].tags == ("attack.t1505.003",
                                                            "site.reviewed")
    # the appended macro reaches the new rule (fork) and the base's (through `spawned`)
    assert fired(stack, **{"event.action": "fork", "process.name": "site-tool"}) == {
        "site_rule": 7}
    # the stack carries the layer's tests only; they pass
    assert [t.rule for t in stack.tests] == ["shell_from_web", "shell_from_web"]
    assert run_tests(stack) == (2, [])
    assert stack.local is not None and stack.local.manifest.name == "site"
    assert stack.describe() == "test 1.0.0 + local site 1"
    assert stack.digest == plain.digest  # the base's content; the layer has its own digest
    assert stack.local.digest != plain.digest


def test_replace_forms_and_enable_disable_on_the_default_bundle(tmp_path: Path) -> None:
    layer = local(tmp_path, """\
        lists:
          shell_binaries: [bash]
        macros:
          in_test_suite: process.name = never-a-test-runner
        rules:
          - rule: shadow_file_read
            enabled: false
          - rule: ssh_private_key_read
            condition: event.action = open and file.path = /srv/keys/site.key
            score: 33
          - rule: "System Information Discovery"   # a Sigma rule (title) the base turns off
            enabled: true
            score: 3
            override: {score: replace}
          - rule: cloud_credentials_read
            condition: "and not user.name = ci"
            override: {condition: append}
    """)
    stack = load_bundle(DEFAULT_BUNDLE, layer)
    base = load_bundle(DEFAULT_BUNDLE)
    assert "shadow_file_read" in fired(base, **SHADOW_CAT)
    assert "shadow_file_read" not in fired(stack, **SHADOW_CAT)
    assert "shadow_file_read" not in stack.ruleset.by_name
    assert fired(stack, **{"event.action": "open", "file.path": "/srv/keys/site.key"}) == {
        "ssh_private_key_read": 33}
    assert "System Information Discovery" not in base.ruleset.by_name
    assert stack.ruleset.by_name["System Information Discovery"].score == 3
    creds = {"event.action": "open", "file.path": "/home/b/.aws/credentials",
             "process.name": "nc"}
    assert "cloud_credentials_read" in fired(stack, **creds)
    assert "cloud_credentials_read" not in fired(stack, **{**creds, "user.name": "ci"})
    assert stack.ruleset.by_name["ssh_private_key_read"].source.startswith(str(layer))


def test_sigma_exceptions_and_static_data_stack(tmp_path: Path) -> None:
    layer = local(tmp_path, """\
        rules:
          - rule: Linux Reverse Shell Indicator
            exceptions:
              - name: lab
                fields: destination.ip
                comps: cidr
                values: [203.0.113.0/24]
            override: {exceptions: append}
        sigma:
          exclude: process.name = site-agent
    """, extra={"static.yaml": """\
        risky_processes:
          - {name: nc, reason: site says worse, score: 99}
          - {name: site-tool, reason: ours, score: 11}
        iocs:
          domains: {evil.example: site feed}
    """})
    stack = load_bundle(DEFAULT_BUNDLE, layer)
    shell = {"event.action": "connect", "process.executable": "/usr/bin/bash",
             "destination.port": 4242, "process.name": "bash"}
    assert "Linux Reverse Shell Indicator" in fired(stack, **{**shell,
                                                              "destination.ip": "198.51.100.9"})
    assert "Linux Reverse Shell Indicator" not in fired(stack, **{
        **shell, "destination.ip": "203.0.113.9"})
    assert "Linux Reverse Shell Indicator" not in fired(stack, **{
        **shell, "destination.ip": "198.51.100.9", "process.name": "site-agent"})
    risky = stack.static.risky_processes
    assert risky["nc"].score == 99 and risky["site-tool"].score == 11 and "ncat" in risky
    assert stack.static.iocs.domains["evil.example"] == "site feed"
    assert len(stack.static.iocs.domains) > 1


@pytest.mark.parametrize(("text", "expected"), [
    ("rules:\n  - rule: shadow_file_read\n    score: 1\n",
     "local.yaml:2: rule 'shadow_file_read': changes score without override"),
    ("rules:\n  - rule: no_such_rule\n    enabled: false\n",
     "local.yaml:2: rule 'no_such_rule': no such rule in the base bundle"),
    ("rules:\n  - rule: shadow_file_read\n    override: {score: append}\n    score: 1\n",
     "rule 'shadow_file_read': override: score can be replace, not 'append'"),
    ("rules:\n  - rule: shadow_file_read\n    override: {output: replace}\n",
     "override names 'output', which the rule does not give"),
    ("rules:\n  - rule: shadow_file_read\n    override: {score: replace}\n    score: 1\n"
     "    output: x\n", "'output' is given without override"),
    ("rules:\n  - rule: shadow_file_read\n    override: {condition: append}\n"
     "    condition: process.name = x\n", "an appended condition starts with 'and' or 'or'"),
    ("rules:\n  - rule: Linux Reverse Shell Indicator\n    override: {condition: append}\n"
     "    condition: and x = 1\n", "a Sigma rule takes score, exceptions, enabled only"),
    ("lists:\n  nope: {items: [a], override: append}\n",
     "local.yaml:2: list 'nope': no such list in the base to append to"),
    ("macros:\n  nope: {condition: or x = 1, override: append}\n",
     "macro 'nope': no such macro in the base to append to"),
    ("rules:\n  - rule: shadow_file_read\n    override: {condition: append}\n"
     "    condition: and process.name in\n", "local.yaml:2: rule 'shadow_file_read': condition:"),
])
def test_a_bad_local_layer_is_refused_at_its_own_file_and_line(tmp_path: Path, text: str,
                                                               expected: str) -> None:
    layer = local(tmp_path, text)
    with pytest.raises(BundleError) as err:
        load_bundle(DEFAULT_BUNDLE, layer)
    assert expected in str(err.value), str(err.value)
    assert f"{layer}/rules/local.yaml:" in str(err.value)  # at the layer's file and line


def test_a_layer_for_another_base_or_alone_is_refused(tmp_path: Path) -> None:
    layer = local(tmp_path, "rules: []\n", manifest=LOCAL_MANIFEST + "base: someone-else\n")
    with pytest.raises(BundleError, match="is a local layer for base 'someone-else', not "
                                          "'threatseer-default'"):
        load_bundle(DEFAULT_BUNDLE, layer)
    with pytest.raises(BundleError, match="is a local layer: it compiles only on a base"):
        load_bundle(layer)
    with pytest.raises(BundleError, match="is not a local layer"):
        load_bundle(DEFAULT_BUNDLE, DEFAULT_BUNDLE)


def test_a_failing_local_test_is_reported_against_the_stack(tmp_path: Path) -> None:
    layer = local(tmp_path, """\
        rules:
          - rule: shadow_file_read
            enabled: true
        tests:
          - rule: shadow_file_read
            no_match: [{event.action: open, file.path: /etc/shadow, process.name: cat}]
    """)
    stack = load_bundle(DEFAULT_BUNDLE, layer)
    count, failures = run_tests(stack)
    assert count == 1 and len(failures) == 1
    assert failures[0].startswith(f"{layer}/rules/local.yaml:6: rule 'shadow_file_read' "
                                  "matched but must not")


# ---- exceptions with comps --------------------------------------------------------------

COMPS_RULES = """\
lists:
  backup_tools: [borg, restic]
rules:
  - rule: watched
    condition: event.action = open
    score: 10
    exceptions:
      - name: eq
        fields: [process.name, file.path]
        comps: [=, =]          # a bare = as Falco writes it
        values: [[cat, /etc/motd]]
      - name: in_and_prefix
        fields: [process.name, file.path]
        comps: [in, startswith]
        values: [[[tar, gzip], /srv/backup/], [backup_tools, /var/backups/]]
      - name: suffix_contains
        fields: [file.path, process.command_line]
        comps: [endswith, contains]
        values: [[.log, --rotate]]
      - name: glob_ne
        fields: [file.path, user.name]
        comps: [glob, "!="]
        values: [["/home/*/.cache/*", root]]
      - name: one_field_in
        fields: process.name
        comps: in
        values: [updatedb, mlocate]
      - name: one_field_default
        fields: process.executable
        values: [/usr/sbin/logrotate, /usr/bin/find]
      - name: case
        fields: [process.name]
        comps: [iendswith]
        values: [[-AGENT]]
"""


@pytest.mark.parametrize(("event", "suppressed"), [
    ({"process.name": "cat", "file.path": "/etc/motd"}, True),
    ({"process.name": "cat", "file.path": "/etc/motd2"}, False),
    ({"process.name": "tar", "file.path": "/srv/backup/db.tar"}, True),
    ({"process.name": "gzip", "file.path": "/srv/backup/x"}, True),
    ({"process.name": "tar", "file.path": "/srv/other/x"}, False),
    ({"process.name": "cp", "file.path": "/srv/backup/x"}, False),
    ({"process.name": "restic", "file.path": "/var/backups/a"}, True),  # `in` a list's name
    ({"process.name": "x", "file.path": "/var/log/a.log",
      "process.command_line": "job --rotate now"}, True),
    ({"process.name": "x", "file.path": "/var/log/a.log",
      "process.command_line": "job now"}, False),
    ({"process.name": "x", "file.path": "/home/al/.cache/f", "user.name": "al"}, True),
    ({"process.name": "x", "file.path": "/home/al/.cache/f", "user.name": "root"}, False),
    ({"process.name": "mlocate", "file.path": "/etc/x"}, True),
    ({"process.name": "locate", "file.path": "/etc/x"}, False),
    ({"process.executable": "/usr/bin/find", "file.path": "/etc/x"}, True),
    ({"process.executable": "/usr/bin/finder", "file.path": "/etc/x"}, False),
    ({"process.name": "site-agent", "file.path": "/etc/x"}, True),
])
def test_exception_comps(tmp_path: Path, event: dict, suppressed: bool) -> None:
    bundle = load_bundle(write_bundle(tmp_path / "b", {"rules/r.yaml": COMPS_RULES}))
    assert ("watched" not in fired(bundle, **{"event.action": "open", **event})) is suppressed


@pytest.mark.parametrize(("exception", "expected"), [
    ("{name: e, fields: [process.name], comps: [regex], values: [[x]]}",
     "exception 'e': unknown comparison 'regex'"),
    ("{name: e, fields: [process.name, file.path], comps: [=], values: [[x, y]]}",
     "exception 'e': comps must give one operator per field"),
    ("{name: e, fields: [process.name], comps: [in], values: [[nope]]}",
     "exception 'e': 'in' takes a list of values or a list's name, not 'nope'"),
    ("{name: e, fields: [process.name], comps: [startswith], values: [[[a, b]]]}",
     "exception 'e': 'startswith' compares with one value"),
    ("{name: e, fields: [destination.ip], comps: [cidr], values: [[not-a-net]]}",
     "exception 'e': not an IP network: 'not-a-net'"),
    ("{name: e, fields: [process.name], values: [[a, b]]}",
     "exception 'e': ['a', 'b'] has 2 values for 1 fields"),
    ("{name: e, fields: [process.name], value: [[a]]}", "exception 'e': unknown key 'value'"),
])
def test_bad_exceptions_are_refused_with_file_line_and_rule(tmp_path: Path, exception: str,
                                                            expected: str) -> None:
    text = ("rules:\n  - rule: r\n    condition: event.action = open\n"
            f"    exceptions: [{exception}]\n")
    root = write_bundle(tmp_path / "b", {"rules/r.yaml": text})
    with pytest.raises(BundleError) as err:
        load_bundle(root)
    assert f"{root}/rules/r.yaml:4: rule 'r': {expected}" in str(err.value), str(err.value)
