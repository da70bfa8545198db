"""SigmaHQ's rules fire on what the sensor really emits: real actions on this kernel, the
sensor's events scored by the hub with SigmaHQ's Linux rules (and, for the categories SigmaHQ
publishes no Linux rule of, small rules of our own). A file created under /etc/cron.d fires
SigmaHQ's "New Cron File Created"."""

from __future__ import annotations

import socket
import subprocess
import textwrap
import uuid
from pathlib import Path

from threatseer.common import ecs
from threatseer.hub.config import ActionConfig
from threatseer.hub.rules.model import Bundle, Manifest
from threatseer.hub.rules.ruleset import IndexedRuleSet
from threatseer.hub.rules.sigma import SigmaUnsupported, compile_sigma
from threatseer.hub.scoring import Pipeline

from .conftest import action  # noqa: TID252

SIGMAHQ = Path(__file__).resolve().parents[1] / "data" / "sigmahq" / "rules" / "linux"


def own_rule(title: str, category: str, detection: str) -> str:
    return textwrap.dedent("""\
        title: {title}
        logsource: {{product: linux, category: {category}}}
        detection:
        {detection}
        level: high
        """).format(title=title, category=category,
                    detection=textwrap.indent(textwrap.dedent(detection), "    "))


def test_sigma_rules_of_each_category_fire_on_real_actions(start_sensor, tmp_path: Path) -> None:
    marker = f"ts-sigma-{uuid.uuid4().hex[:8]}"
    scratch = tmp_path / marker
    scratch.mkdir()
    rules = []
    for f in sorted(SIGMAHQ.rglob("*.yml")):
        try:
            rules.append(compile_sigma(f.read_text(), f.name))
        except SigmaUnsupported:
            continue
    for text in (
        own_rule("Scratch file deleted", "file_delete",
                 f"selection:\n    TargetFilename|contains: '{marker}'\ncondition: selection"),
        own_rule("Scratch sleeper ended", "process_termination",
                 f"selection:\n    CommandLine|contains: '{marker}'\ncondition: selection"),
    ):
        rules.append(compile_sigma(text, "own.yml"))
    cron = Path("/etc/cron.d") / marker
    sensor = start_sensor(watched_paths=["/etc/cron.d/", f"{scratch}/"])
    try:
        cron.write_text("# threatseer test: never runs\n")
    finally:
        cron.unlink(missing_ok=True)
    victim = scratch / "victim"
    victim.write_text("x")
    victim.unlink()
    subprocess.run(["/bin/sh", "-c", f": {marker}"], check=True)
    # argv[0] "whoami", as a shell runs it: auditd would log a0="whoami" too
    subprocess.run(["whoami"], stdout=subprocess.DEVNULL, check=True)
    subprocess.run(["/usr/bin/cat", "/etc/group"], stdout=subprocess.DEVNULL, check=True)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:  # to this host only
        name = b"".join(bytes([len(p)]) + p for p in b"pool.minexmr.com".split(b"."))
        udp.sendto(b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00" + name
                   + b"\x00\x00\x01\x00\x01", ("127.0.0.1", 53))
    sensor.wait_for(lambda e: action("unlink")(e) and marker in e["file"]["path"])
    sensor.wait_for(lambda e: action("exit")(e) and marker in " ".join(
        e["process"].get("args", [])))
    sensor.wait_for(lambda e: action("dns-query")(e)
                    and e.get("dns", {}).get("question", {}).get("name") == "pool.minexmr.com")
    sensor.stop()
    flat = [ecs.flatten(e) for e in sensor.events]
    bundle = Bundle(Manifest(name="sigmahq", version="test"), ruleset=IndexedRuleSet(rules))
    scored = Pipeline(ActionConfig(toss_below=1, alert_at=1), bundle, None).score(
        flat, "s1", 1, 0.0).emitted

    def fired(title: str, pred) -> list[dict]:
        return [e for e in scored if pred(e) and any(
            i["rule"] == title for i in e["threatseer.indicators"])]

    created = fired("New Cron File Created",
                    lambda e: e.get("file.path") == str(cron) and e["event.action"] == "create")
    assert created, sorted({(e["event.action"], e.get("file.path")) for e in flat
                            if "cron" in str(e.get("file.path"))})
    assert created[0]["rule.name"] == "New Cron File Created"
    assert created[0]["threat.tactic.id"]  # persistence, from the rule's tags
    assert fired("Scratch file deleted", lambda e: e["event.action"] == "unlink")
    assert fired("Scratch sleeper ended", lambda e: e["event.action"] == "exit")
    # process_creation and auditd EXECVE (SigmaHQ's, a0 = whoami) on real execs
    assert fired("Local Groups Discovery - Linux", lambda e: e["event.action"] == "exec")
    assert fired("System Owner or User Discovery - Linux",
                 lambda e: e["event.action"] == "exec"
                 and e["process.executable"].endswith("/whoami"))
    # network_connection (SigmaHQ's): the host name is known from the DNS query
    assert fired("Linux Crypto Mining Pool Connections",
                 lambda e: e["event.action"] == "dns-query")
