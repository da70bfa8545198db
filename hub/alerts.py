"""What an alert says in ECS's words: ``rule.*``, ``threat.*`` and ``message``.

The engines' findings stay in ``threatseer.indicators``; an alert also names, as Kibana and the
Elastic Security app expect, the rule that weighed most (``rule.*``: the highest-scoring
indicator, the first of equals), every ATT&CK tactic and technique the matching rules are
tagged with (``threat.*``, from Sigma-style tags such as ``attack.t1003.008`` and
``attack.credential-access``) and a one-line ``message``: that rule's rendered output, else its
description. Only alerts get them: they are few, and the per-alert work (a dict walk over its
indicators) stays off the path of the other events.

Technique names are not filled: ATT&CK's catalogue is not shipped with threatseer (pySigma
downloads it on demand, which a hub must not do); tactic names are, from the table below.
"""

from __future__ import annotations

from typing import Any

FRAMEWORK = "MITRE ATT&CK"
# ATT&CK Enterprise tactics: tag spelling (as Sigma writes them) -> (id, name).
TACTICS: dict[str, tuple[str, str]] = {
    "reconnaissance": ("TA0043", "Reconnaissance"),
    "resource-development": ("TA0042", "Resource Development"),
    "initial-access": ("TA0001", "Initial Access"),
    "execution": ("TA0002", "Execution"),
    "persistence": ("TA0003", "Persistence"),
    "privilege-escalation": ("TA0004", "Privilege Escalation"),
    "defense-evasion": ("TA0005", "Defense Evasion"),
    "credential-access": ("TA0006", "Credential Access"),
    "discovery": ("TA0007", "Discovery"),
    "lateral-movement": ("TA0008", "Lateral Movement"),
    "collection": ("TA0009", "Collection"),
    "command-and-control": ("TA0011", "Command and Control"),
    "exfiltration": ("TA0010", "Exfiltration"),
    "impact": ("TA0040", "Impact"),
}
_TACTIC_IDS = {tid.lower(): (tid, name) for tid, name in TACTICS.values()}
_ATTACK = "https://attack.mitre.org"


def _technique(tag: str) -> tuple[str, str | None] | None:
    """('T1003', '008') for 't1003.008', ('T1003', None) for 't1003', else None."""
    head, _, sub = tag.partition(".")
    if len(head) == 5 and head[0] == "t" and head[1:].isdigit():
        if not sub:
            return head.upper(), None
        if len(sub) == 3 and sub.isdigit():
            return head.upper(), sub
    return None


def threat_fields(tags: list[str]) -> dict[str, Any]:
    """ECS ``threat.*`` for ATT&CK tags (``attack.*``; others are ignored); {} for none."""
    tactics: dict[str, str] = {}
    techniques: list[str] = []
    subtechniques: list[str] = []
    for raw in tags:
        if not isinstance(raw, str) or not raw.lower().startswith("attack."):
            continue
        tag = raw[7:].lower().replace("_", "-")
        tactic = TACTICS.get(tag) or _TACTIC_IDS.get(tag)
        if tactic is not None:
            tactics.setdefault(tactic[0], tactic[1])
            continue
        tech = _technique(tag)
        if tech is None:
            continue
        if tech[0] not in techniques:
            techniques.append(tech[0])
        if tech[1] is not None and f"{tech[0]}.{tech[1]}" not in subtechniques:
            subtechniques.append(f"{tech[0]}.{tech[1]}")
    if not tactics and not techniques:
        return {}
    out: dict[str, Any] = {"threat.framework": FRAMEWORK}
    if tactics:
        out["threat.tactic.id"] = list(tactics)
        out["threat.tactic.name"] = list(tactics.values())
        out["threat.tactic.reference"] = [f"{_ATTACK}/tactics/{t}/" for t in tactics]
    if techniques:
        out["threat.technique.id"] = techniques
        out["threat.technique.reference"] = [f"{_ATTACK}/techniques/{t}/" for t in techniques]
    if subtechniques:
        out["threat.technique.subtechnique.id"] = subtechniques
        out["threat.technique.subtechnique.reference"] = [
            f"{_ATTACK}/techniques/{s.replace('.', '/')}/" for s in subtechniques]
    return out


_THREAT_CACHE: dict[tuple[Any, ...], dict[str, Any]] = {}
_THREAT_CACHE_MAX = 4096


def _threat_fields_cached(tags: list[str]) -> dict[str, Any]:
    """:func:`threat_fields`, remembered per tag sequence (alerts of one rule, or of the
    same few rules, repeat theirs); each alert gets lists of its own."""
    key = tuple(tags)
    try:
        hit = _THREAT_CACHE.get(key)
    except TypeError:  # an unhashable tag: threat_fields ignores it, the cache cannot
        return threat_fields(tags)
    if hit is None:
        if len(_THREAT_CACHE) >= _THREAT_CACHE_MAX:
            _THREAT_CACHE.clear()
        hit = _THREAT_CACHE[key] = threat_fields(tags)
    return {k: list(v) if v.__class__ is list else v for k, v in hit.items()}


def describe(alert: dict[str, Any], rule_meta: Any, ruleset: str, version: str) -> None:
    """Add ``rule.*``, ``threat.*`` and ``message`` to one scored alert, in place.

    ``rule_meta(name)`` gives a dynamic or Sigma rule's metadata (``CompiledRule.meta``:
    id, uuid, reference, author, license), or None; ``ruleset``/``version``: the bundle's.
    """
    indicators = alert.get("threatseer.indicators")
    if not isinstance(indicators, list) or not indicators:
        return
    top = indicators[0]
    tags: list[str] = []
    for ind in indicators:
        if ind["score"] > top["score"]:
            top = ind
        tags.extend(ind.get("tags") or ())
    name = str(top.get("rule", ""))
    engine = top.get("engine", "")
    alert["rule.name"] = name
    alert["rule.description"] = str(top.get("description", ""))
    alert["rule.category"] = str(top.get("type", ""))
    meta = rule_meta(name) if engine in ("dynamic", "sigma") else None
    if engine == "profile":
        alert["rule.ruleset"] = "threatseer-profiles"
        alert["rule.id"] = f"profile:{name}"
    else:
        alert["rule.ruleset"] = ruleset
        alert["rule.version"] = version
        alert["rule.id"] = (meta or {}).get("id") or f"{engine}:{name}"
    if meta:
        for key in ("uuid", "reference", "author", "license"):
            if meta.get(key):
                alert[f"rule.{key}"] = meta[key]
    extra = top.get("extra_info")
    output = extra.get("output") if isinstance(extra, dict) else None
    alert["message"] = output if isinstance(output, str) and output else (
        alert["rule.description"] or name)
    alert.update(_threat_fields_cached(tags))
