"""The default bundle: every rule tagged and tested, Sigma rules all loaded, benign activity quiet."""

from __future__ import annotations

import re

import pytest
from rules_helpers import DEFAULT_BUNDLE

from threatseer.hub.rules.bundle import complete_event, load_bundle

MITRE_TECHNIQUE = re.compile(r"attack\.t\d{4}(\.\d{3})?\Z")


@pytest.fixture(scope="module")
def bundle():
    return load_bundle(DEFAULT_BUNDLE)


def test_every_dynamic_rule_has_mitre_tags_and_both_kinds_of_test(bundle) -> None:
    dynamic = [r for r in bundle.ruleset.rules if r.engine == "dynamic"]
    # a sequence is one rule (its steps are filed in the index on their own)
    rules = {getattr(r, "sequence", None) or r: None for r in dynamic}
    assert len(rules) >= 80
    assert len(bundle.ruleset.sequences) >= 10
    for rule in rules:
        assert any(MITRE_TECHNIQUE.match(t) for t in rule.tags), rule.name
        kinds = {t.expect_match for t in bundle.tests if t.rule == rule.name}
        assert kinds == {True, False}, rule.name
        assert rule.description and 0 < rule.score <= 100, rule.name


def test_sigma_rules_and_static_data_are_in(bundle) -> None:
    sigma = [r for r in bundle.ruleset.rules if r.engine == "sigma"]
    assert len(sigma) >= 120 and bundle.unsupported == []
    assert (DEFAULT_BUNDLE / "sigma" / "LICENSE").is_file()
    original = {"curl", "wget", "nc", "netcat", "bash", "sh", "perl", "python", "python3", "ruby",
                "node", "sudo", "vim", "vi", "emacs", "nano", "gcc", "dig", "cat", "sleep"}
    assert original <= set(bundle.static.risky_processes)
    assert any(f.glob == "/etc/shadow" for f in bundle.static.sensitive_files)


def _exec(cmd: str, parent: str = "bash", ancestors: tuple[str, ...] = ("bash", "sshd"),
          exe: str | None = None) -> dict:
    args = cmd.split()
    name = args[0].rsplit("/", 1)[-1]
    return complete_event({
        "event.action": "exec", "process.name": name[:15],
        "process.executable": exe or (args[0] if args[0].startswith("/") else f"/usr/bin/{name}"),
        "process.args": args, "process.command_line": cmd, "process.parent.name": parent,
        "threatseer.ancestors": list(ancestors), "user.name": "root"})


def _open(path: str, flags: tuple[str, ...] = ("read",), name: str = "python3",
          ancestors: tuple[str, ...] = ("bash",)) -> dict:
    return complete_event({"event.action": "open", "file.path": path, "process.name": name,
                           "threatseer.open.flags": list(flags),
                           "threatseer.ancestors": list(ancestors)})


def _connect(ip: str, port: int, name: str) -> dict:
    return complete_event({"event.action": "connect", "destination.ip": ip,
                           "destination.port": port, "process.name": name,
                           "network.direction": "egress"})


BENIGN = [
    _exec("apt-get install -y redis-server"),
    _exec("dpkg --configure -a", "apt-get", ("apt-get", "bash")),
    _exec("/bin/sh -c /usr/lib/apt/apt.systemd.daily", "cron", ("cron", "systemd")),
    _exec("run-parts --report /etc/cron.daily", "sh", ("sh", "cron", "systemd")),
    _exec("/usr/sbin/logrotate /etc/logrotate.conf", "sh", ("sh", "cron")),
    _exec("rm -f /var/log/syslog.5.gz", "logrotate", ("logrotate", "sh", "cron")),
    _exec("/usr/bin/python3 /usr/bin/salt-minion", "systemd", ("systemd",)),
    _exec("/bin/sh -c uname -s -r", "salt-minion", ("salt-minion", "systemd")),
    _exec("ip addr show", "salt-minion", ("salt-minion", "systemd")),
    _exec("useradd --system svc", "salt-minion", ("salt-minion", "systemd")),
    _exec("pytest -q tests"),
    _exec("python3 -m pytest tests/rules"),
    _exec("/tmp/pytest-of-root/pytest-1/test0/a.out", "python3", ("python3", "pytest", "bash")),
    _exec("chmod +x /tmp/pytest-of-root/x.sh", "pytest", ("pytest", "bash")),
    _exec("gcc -O2 -c x.c", "make", ("make", "bash")),
    _exec("cat /etc/passwd"), _exec("id"), _exec("uname -a"), _exec("hostname"),
    _exec("git status"), _exec("ssh host uptime"), _exec("systemctl restart nginx"),
    _exec("crontab -l"), _exec("ls -la /tmp"), _exec("ps aux"), _exec("netstat -tlnp"),
    _exec("curl -s http://127.0.0.1:9200/"), _exec("find / -name x"), _exec("sudo -l"),
    _exec("iptables -L -n"), _exec("docker ps"), _exec("python3 -c print(1)"),
    _open("/etc/passwd"), _open("/etc/ld.so.cache"), _open("/etc/shadow", name="sshd"),
    _open("/var/lib/dpkg/status", ("write",), "dpkg"),
    _open("/etc/cron.d/x", ("write", "create"), "python3", ("salt-minion",)),
    _open("/etc/systemd/system/x.service", ("write", "create"), "dpkg", ("apt-get",)),
    _open("/var/log/syslog", ("write",), "rsyslogd"), _open("/tmp/x", ("write", "create")),
    _connect("127.0.0.1", 9200, "python3"), _connect("151.101.1.1", 443, "apt-get"),
    _connect("10.0.0.2", 4505, "salt-minion"), _connect("10.0.0.5", 5432, "nginx"),
]


@pytest.mark.parametrize("event", BENIGN, ids=lambda e: e.get("process.command_line")
                         or e.get("file.path") or e.get("destination.ip"))
def test_benign_activity_is_quiet(bundle, event: dict) -> None:
    assert [i.rule for i in bundle.ruleset.match(event)] == []
