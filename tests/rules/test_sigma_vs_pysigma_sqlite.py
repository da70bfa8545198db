"""The hub's Sigma matching agrees with pySigma's own SQLite backend (pySigma-backend-sqlite)
on SigmaHQ's Linux rules, category by category.

Events are generated from the rules' own values (wildcards filled in, prefixes and suffixes
added, case changed, values swapped between rules), so that many match and many nearly do. Each
event exists twice: as the row SQLite sees, in Sigma's field names (as a Sysmon for Linux or
auditd log would give them), and as the event the sensor emits for the same action, in ECS.
SQLite runs each rule's query from the backend; the hub runs the bundle's rule index. Per
category, the (rule, event) pairs either side matched must agree on at least 95%.
"""

from __future__ import annotations

import ipaddress
import random
import re
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from sigma.backends.sqlite import sqliteBackend
from sigma.rule import SigmaDetection, SigmaRule
from sigma.types import (
    SigmaBool,
    SigmaCIDRExpression,
    SigmaExpansion,
    SigmaNumber,
    SigmaString,
    SpecialChars,
)

from threatseer.hub.rules.ruleset import IndexedRuleSet
from threatseer.hub.rules.sigma import SigmaUnsupported, compile_sigma
from threatseer.hub.rules.sigma_pipeline import SYSCALLS

SIGMAHQ = Path(__file__).resolve().parents[1] / "data" / "sigmahq" / "rules" / "linux"
COLUMNS = {
    "process_creation": ["Image", "CommandLine", "ParentImage", "ParentCommandLine", "User",
                         "CurrentDirectory", "LogonId"],
    "file_event": ["TargetFilename", "Image"],
    "network_connection": ["Image", "DestinationIp", "DestinationPort", "DestinationHostname",
                           "Initiated"],
    "auditd": ["type", "SYSCALL", "exe", "comm", "uid", "euid", "name",
               *(f"a{i}" for i in range(8))],
}
FILLERS = ["", "x", "/tmp/a b", "-v", "evil", "/usr/bin/", "1"]


def _values(value: Any, rnd: random.Random) -> list[Any]:
    """Concrete values a Sigma value can stand for (none for what cannot be generated)."""
    if isinstance(value, SigmaExpansion):
        return [v for sub in value.values for v in _values(sub, rnd)]
    if isinstance(value, SigmaString):
        out = []
        for part in value.s:
            if part is SpecialChars.WILDCARD_MULTI:
                out.append(rnd.choice(FILLERS))
            elif part is SpecialChars.WILDCARD_SINGLE:
                out.append("a")
            elif isinstance(part, str):
                out.append(part)
        return ["".join(out)]
    if isinstance(value, SigmaNumber):
        return [value.number]
    if isinstance(value, SigmaBool):
        return ["true" if value.boolean else "false"]
    if isinstance(value, SigmaCIDRExpression):
        net = ipaddress.ip_network(str(value.network), strict=False)
        return [str(net.network_address + min(1, net.num_addresses - 1))]
    return []


def _items(detection: Any) -> list[tuple[str | None, list[Any]]]:
    if isinstance(detection, SigmaDetection):
        return [i for d in detection.detection_items for i in _items(d)]
    return [(detection.field, list(detection.value))]


def _pool(rule: SigmaRule, rnd: random.Random) -> dict[str | None, list[Any]]:
    pool: dict[str | None, list[Any]] = {}
    for detection in rule.detection.detections.values():
        for field, values in _items(detection):
            for v in values:
                pool.setdefault(field, []).extend(_values(v, rnd))
    return pool


def _vary(value: Any, rnd: random.Random) -> Any:
    if not isinstance(value, str):
        return value
    roll = rnd.random()
    if roll < 0.15:
        return value.upper()
    if roll < 0.3:
        return rnd.choice(FILLERS) + value
    if roll < 0.45:
        return value + rnd.choice(FILLERS)
    if roll < 0.5:
        return value[: len(value) // 2]
    return value


def _as_audit_record(row: dict[str, Any], rnd: random.Random) -> None:
    """What auditd writes: EXECVE's arguments a0..aN without gaps; a SYSCALL record's aN are
    the syscall's raw arguments (hex); a PATH record has none."""
    args = {int(k[1:]): v for k, v in row.items() if re.fullmatch(r"a\d", k)}
    for k in [k for k in row if re.fullmatch(r"a\d", k)]:
        del row[k]
    kind = str(row["type"]).upper()
    if kind == "EXECVE" and args:
        for i in range(max(args) + 1):
            row[f"a{i}"] = str(args.get(i, rnd.choice(["x", "-v", "1"])))
    elif kind == "SYSCALL":
        for i in range(4):
            row[f"a{i}"] = rnd.choice(["0", "3", "7ffd2a1c", "40000"])


def rows_for(category: str, rules: list[SigmaRule], per_rule: int, seed: int
             ) -> list[dict[str, Any]]:
    """Sigma-field rows: each from one rule's values (often varied), some from another's."""
    rnd = random.Random(seed)
    pools = [_pool(r, rnd) for r in rules]
    rows = []
    for pool in pools:
        for _ in range(per_rule):
            row: dict[str, Any] = {}
            source = pool if rnd.random() < 0.8 else rnd.choice(pools)
            for col in COLUMNS[category]:
                if col == "type":
                    continue
                values = source.get(col) or (rnd.choice(pools).get(col) if rnd.random() < 0.3
                                             else None)
                if values:
                    row[col] = _vary(rnd.choice(values), rnd)
            if category == "auditd":
                words = source.get(None) or []
                if words and "a0" not in row:  # keywords: put them in the arguments
                    row.update({f"a{i}": str(_vary(w, rnd)) for i, w in enumerate(
                        rnd.sample(words, min(len(words), 3)))})
                types = [str(t).upper() for t in source.get("type") or ()]
                row["type"] = rnd.choice(types or ["EXECVE", "SYSCALL", "PATH"])
                _as_audit_record(row, rnd)
            if category == "network_connection":
                row.setdefault("Initiated", rnd.choice(["true", "false"]))
                if str(row["Initiated"]).lower() != "true":
                    row.pop("DestinationHostname", None)  # only outbound queries name hosts
            rows.append(row)
    return rows


def ecs_event(category: str, row: dict[str, Any]) -> dict[str, Any]:
    """The event the sensor emits for the action the row logs."""
    def put(ev: dict[str, Any], ecs: str, col: str) -> None:
        if col in row:
            ev[ecs] = str(row[col]) if ecs != "destination.port" else row[col]

    ev: dict[str, Any] = {}
    if category == "process_creation":
        ev["event.action"] = "exec"
        for ecs_name, col in (("process.executable", "Image"), ("process.command_line",
                              "CommandLine"), ("process.parent.executable", "ParentImage"),
                              ("process.parent.command_line", "ParentCommandLine"),
                              ("user.name", "User"), ("process.working_directory",
                              "CurrentDirectory"), ("threatseer.user.audit.id", "LogonId")):
            put(ev, ecs_name, col)
    elif category == "file_event":
        ev["event.action"] = random.Random(str(row)).choice(
            ["create", "write-open", "rename", "truncate"])
        put(ev, "file.path", "TargetFilename")
        put(ev, "process.executable", "Image")
    elif category == "network_connection":
        initiated = str(row.get("Initiated")).lower() == "true"
        if "DestinationHostname" in row and initiated:
            ev["event.action"] = "dns-query"
            put(ev, "dns.question.name", "DestinationHostname")
        else:
            ev["event.action"] = "connect" if initiated else "accept"
        ev["network.direction"] = "egress" if initiated else "ingress"
        put(ev, "destination.ip", "DestinationIp")
        put(ev, "destination.port", "DestinationPort")
        put(ev, "process.executable", "Image")
    else:
        kind = str(row.get("type", "")).upper()
        if kind == "EXECVE":
            args = []
            for i in range(8):
                if f"a{i}" not in row:
                    break
                args.append(str(row[f"a{i}"]))
            ev.update({"event.action": "exec", "process.args": args,
                       "process.command_line": " ".join(args)})
        elif kind == "PATH":
            ev["event.action"] = "open"
            put(ev, "file.path", "name")
        else:
            actions = SYSCALLS.get(str(row.get("SYSCALL", "")).lower())
            ev["event.action"] = actions[0] if actions else "sensor-health"
        put(ev, "process.executable", "exe")
        put(ev, "process.name", "comm")
        put(ev, "user.id", "uid")
        put(ev, "user.effective.id", "euid")
    return ev


def action(category: str, row: dict[str, Any]) -> tuple[list[dict[str, Any]],
                                                        list[dict[str, Any]]]:
    """One action as its log lines (SQLite rows) and as the sensor's events. Most are one of
    each; an execution is auditd's SYSCALL (exe, comm, ids) and EXECVE (arguments) records,
    an open its SYSCALL and PATH records; an outbound connection to a named host is the
    sensor's DNS query and its connect."""
    if category == "auditd":
        kind = str(row.get("type", "")).upper()
        syscall = {k: row[k] for k in ("exe", "comm", "uid", "euid") if k in row}
        if kind == "EXECVE":
            args = {k: v for k, v in row.items() if re.fullmatch(r"a\d", k)}
            rows = [{"type": "SYSCALL", "SYSCALL": "execve", **syscall},
                    {"type": "EXECVE", **args}]
        elif kind == "PATH":
            rows = [{"type": "SYSCALL", "SYSCALL": "openat", **syscall},
                    {"type": "PATH", **({"name": row["name"]} if "name" in row else {})}]
        else:
            rows = [row]
        return [sqlite_row(category, r) for r in rows], [ecs_event(category, row)]
    if category == "network_connection" and "DestinationHostname" in row:
        rest = {k: v for k, v in row.items() if k != "DestinationHostname"}
        events = [ecs_event(category, row), ecs_event(category, rest)]
        return [sqlite_row(category, row)], events
    return [sqlite_row(category, row)], [ecs_event(category, row)]


def sqlite_row(category: str, row: dict[str, Any]) -> dict[str, Any]:
    """The row as SQLite stores it; auditd EXECVE records' text (what keywords search) is
    their arguments."""
    out = dict(row)
    if category == "auditd":
        out["fulltext"] = " ".join(str(row[f"a{i}"]) for i in range(8) if f"a{i}" in row) \
            if str(row.get("type", "")).upper() == "EXECVE" else ""
    return out


def _regexp(pattern: str, value: Any) -> bool:
    return value is not None and re.search(pattern, str(value)) is not None


@pytest.mark.parametrize("category", ["process_creation", "file_event", "network_connection",
                                      "auditd"])
def test_agreement_with_pysigma_sqlite(category: str) -> None:
    backend = sqliteBackend(fulltext_field="fulltext")
    files = sorted((SIGMAHQ / category).rglob("*.yml"))
    rules, queries, compiled = [], [], []
    for f in files:
        text = f.read_text()
        try:
            ours = compile_sigma(text, f.name)
            (query,) = backend.convert_rule(SigmaRule.from_yaml(text))
        except (SigmaUnsupported, Exception):  # either side cannot take it: not compared
            continue
        rules.append(SigmaRule.from_yaml(text))
        queries.append(query)
        compiled.append(ours)
    assert len(compiled) >= {"process_creation": 100, "file_event": 8,
                             "network_connection": 4, "auditd": 35}[category]
    per_rule = {"process_creation": 6, "auditd": 12}.get(category, 60)
    rows = rows_for(category, rules, per_rule=per_rule, seed=17)
    db = sqlite3.connect(":memory:")
    db.create_function("REGEXP", 2, _regexp, deterministic=True)
    cols = [*COLUMNS[category], "fulltext"]
    db.execute("CREATE TABLE logs (" + ", ".join(f'"{c}" COLLATE NOCASE' for c in cols) + ")")
    owner = []  # SQLite row -> the action it logs
    events = []
    for i, row in enumerate(rows):
        srows, evs = action(category, row)
        events.append(evs)
        for srow in srows:
            owner.append(i)
            names = ", ".join(["rowid", *(f'"{c}"' for c in srow)])
            db.execute(f"INSERT INTO logs ({names}) VALUES ({', '.join('?' * (len(srow) + 1))})",
                       (len(owner), *srow.values()))
    theirs = set()
    for r, query in enumerate(queries):
        theirs |= {(r, owner[rowid - 1]) for (rowid,) in db.execute(
            query.replace("SELECT *", "SELECT rowid", 1))}
    ruleset = IndexedRuleSet(compiled)
    order = {id(rule): r for r, rule in enumerate(compiled)}
    ours = {(order[id(rule)], i) for i, evs in enumerate(events) for ev in evs
            for rule in ruleset.matching_rules(ev)}
    both = ours & theirs
    either = ours | theirs
    assert len(theirs) >= 30, f"too few matches to compare: {len(theirs)}"
    agreement = len(both) / len(either)
    print(f"{category}: {len(compiled)} rules, {len(rows)} actions, {len(theirs)} pySigma"
          f" matches, {len(ours)} hub matches, agreement {agreement:.1%}")
    differ = sorted(either - both)[:10]
    detail = [(rules[r].title, rows[i], (r, i) in ours) for r, i in differ]
    assert agreement >= 0.95, (f"{category}: {agreement:.1%} of {len(either)} matches agree;"
                               f" first differences (rule, row, hub matched): {detail}")
