"""Sigma rules (parsed by pySigma) translated into the query AST, so they share the
evaluator and the index with the bundle's own rules.

Supported: Linux logsources process_creation, file_event and network_connection; the fields
in :data:`FIELDS`; the value types pySigma produces for the modifiers those rules use
(contains, startswith, endswith, all, re, cidr, windash, base64, base64offset, exists, cased,
lt/gt...). Strings match case-insensitively, as Sigma specifies, unless ``|cased``. Anything
else raises :class:`SigmaUnsupported` with the reason, which the bundle loader reports in
``Bundle.unsupported``: a rule is never dropped silently.
"""

from __future__ import annotations

import re
from typing import Any

from sigma.conditions import (
    ConditionAND,
    ConditionFieldEqualsValueExpression,
    ConditionNOT,
    ConditionOR,
    ConditionValueExpression,
)
from sigma.exceptions import SigmaError
from sigma.rule import SigmaRule
from sigma.types import (
    CompareOperators,
    SigmaBool,
    SigmaCasedString,
    SigmaCIDRExpression,
    SigmaCompareExpression,
    SigmaExists,
    SigmaExpansion,
    SigmaNull,
    SigmaNumber,
    SigmaRegularExpression,
    SigmaRegularExpressionFlag,
    SigmaString,
    SpecialChars,
)

from threatseer.hub.rules.query.ast import Cmp, Field, Node, Not, conj, disj
from threatseer.hub.rules.query.compiler import compile_condition
from threatseer.hub.rules.query.errors import QueryError
from threatseer.hub.rules.ruleset import CompiledRule


class SigmaUnsupported(ValueError):
    """A Sigma rule this hub cannot evaluate; ``str()`` is the reason."""


# Sigma field -> ECS field(s): the first present is used.
FIELDS: dict[str, tuple[str, ...]] = {
    "Image": ("process.executable",),
    "CommandLine": ("process.command_line",),
    "ParentImage": ("process.parent.executable",),
    "ParentCommandLine": ("process.parent.command_line",),
    "User": ("user.name",),
    "CurrentDirectory": ("process.working_directory",),
    "ProcessId": ("process.pid",),
    "ParentProcessId": ("process.parent.pid",),
    "LogonId": ("threatseer.user.audit.id",),
    "TargetFilename": ("file.path",),
    "DestinationIp": ("destination.ip",),
    "DestinationPort": ("destination.port",),
    "DestinationHostname": ("destination.domain", "dns.question.name"),
    "SourceIp": ("source.ip",),
    "SourcePort": ("source.port",),
    "Protocol": ("network.transport",),
    "sha256": ("process.hash.sha256",),
}

LEVEL_SCORES = {"informational": 5, "low": 15, "medium": 30, "high": 60, "critical": 90}

_WRITE_INTENT = ("write", "create", "truncate")


def _logsource(rule: SigmaRule, uses_hostname: bool) -> Node:
    ls = rule.logsource
    if ls.product not in (None, "linux"):
        raise SigmaUnsupported(f"logsource product {ls.product!r} is not linux")
    if ls.service is not None:
        raise SigmaUnsupported(f"logsource service {ls.service!r} is not supported")
    action = Field("event.action")
    if ls.category == "process_creation":
        return Cmp(action, "=", ("exec",))
    if ls.category == "file_event":
        return conj(Cmp(action, "=", ("open",)),
                    Cmp(Field("threatseer.open.flags"), "=", _WRITE_INTENT))
    if ls.category == "network_connection":
        # A host name is only known from DNS queries unless something resolved it.
        actions = ("connect", "accept", "dns-query") if uses_hostname else ("connect", "accept")
        return Cmp(action, "=", actions)
    raise SigmaUnsupported(f"logsource category {ls.category!r} is not supported")


def _field(name: str) -> Field:
    ecs = FIELDS.get(name)
    if ecs is None:
        raise SigmaUnsupported(f"field {name!r} has no ECS mapping")
    return Field(ecs[0], None, ecs[1:])


def _string(field: Field, value: SigmaString) -> Node:
    nocase = not isinstance(value, SigmaCasedString)
    parts = list(value.s)
    if any(not isinstance(p, str | SpecialChars) for p in parts):
        raise SigmaUnsupported("placeholders (expand modifier) are not supported")
    star = SpecialChars.WILDCARD_MULTI
    plain = [p for p in parts if isinstance(p, str)]
    specials = [p for p in parts if not isinstance(p, str)]
    if not specials:
        return Cmp(field, "=", ("".join(plain),), nocase)
    if parts == [star]:
        return Cmp(field, "exists")
    if len(plain) == 1 and all(p is star for p in specials):
        text = plain[0]
        lead, trail = parts[0] is star, parts[-1] is star
        if len(parts) == 3 and lead and trail:
            return Cmp(field, "contains", (text,), nocase)
        if len(parts) == 2 and trail:
            return Cmp(field, "startswith", (text,), nocase)
        if len(parts) == 2 and lead:
            return Cmp(field, "endswith", (text,), nocase)
    pattern = "".join(
        re.escape(p) if isinstance(p, str) else (".*" if p is star else ".") for p in parts)
    return Cmp(field, "regex", (f"\\A(?:{pattern})\\Z",), nocase)


def _value(field_name: str | None, value: Any) -> Node:
    if field_name is None:
        raise SigmaUnsupported("keyword (field-less) detection is not supported")
    if field_name == "Initiated":
        if not isinstance(value, SigmaString | SigmaBool):
            raise SigmaUnsupported(f"Initiated value {value!r}")
        initiated = str(value).lower() == "true" if isinstance(value, SigmaString) \
            else bool(value.boolean)
        if initiated:
            return disj(Cmp(Field("network.direction"), "=", ("egress",)),
                        Cmp(Field("event.action"), "=", ("dns-query", "connect")))
        return Cmp(Field("network.direction"), "=", ("ingress",))
    field = _field(field_name)
    if isinstance(value, SigmaExpansion):
        return disj(*(_value(field_name, v) for v in value.values))
    if isinstance(value, SigmaString):
        return _string(field, value)
    if isinstance(value, SigmaBool):
        return Cmp(field, "=", (bool(value.boolean),))
    if isinstance(value, SigmaNumber):
        return Cmp(field, "=", (value.number,))
    if isinstance(value, SigmaNull):
        return Not(Cmp(field, "exists"))
    if isinstance(value, SigmaExists):
        node = Cmp(field, "exists")
        return node if value.exists else Not(node)
    if isinstance(value, SigmaRegularExpression):
        nocase = SigmaRegularExpressionFlag.IGNORECASE in value.flags
        pattern = value.regexp.to_plain()
        if SigmaRegularExpressionFlag.MULTILINE in value.flags:
            pattern = "(?m)" + pattern
        return Cmp(field, "regex", (pattern,), nocase)
    if isinstance(value, SigmaCIDRExpression):
        return Cmp(field, "cidr", (str(value.network),))
    if isinstance(value, SigmaCompareExpression):
        op = {CompareOperators.LT: "<", CompareOperators.LTE: "<=", CompareOperators.GT: ">",
              CompareOperators.GTE: ">="}.get(value.op)
        if op is None:
            return Not(Cmp(field, "=", (value.number.number,)))
        return Cmp(field, op, (value.number.number,))
    raise SigmaUnsupported(f"value type {type(value).__name__} on {field_name} is not supported")


def _merge_or(items: list[Node]) -> Node:
    """Fold ``a = x or a = y`` into one ``a = (x, y)`` (one closure, one set lookup)."""
    merged: dict[tuple[Field, str, bool], list[Any]] = {}
    rest: list[Node] = []
    for item in items:
        if isinstance(item, Cmp) and item.op not in ("exists", "<", "<=", ">", ">="):
            merged.setdefault((item.field, item.op, item.nocase), []).extend(item.values)
        else:
            rest.append(item)
    cmps = [Cmp(f, op, tuple(vals), nocase) for (f, op, nocase), vals in merged.items()]
    return disj(*cmps, *rest)


def _condition(node: Any) -> Node:
    if isinstance(node, ConditionAND):
        return conj(*(_condition(a) for a in node.args))
    if isinstance(node, ConditionOR):
        return _merge_or([_condition(a) for a in node.args])
    if isinstance(node, ConditionNOT):
        return Not(_condition(node.args[0]))
    if isinstance(node, ConditionFieldEqualsValueExpression):
        return _value(node.field, node.value)
    if isinstance(node, ConditionValueExpression):
        return _value(None, node.value)
    raise SigmaUnsupported(f"condition element {type(node).__name__} is not supported")


def _uses(node: Any, field_name: str) -> bool:
    if isinstance(node, ConditionFieldEqualsValueExpression):
        return node.field == field_name
    return any(_uses(a, field_name) for a in getattr(node, "args", ()) or ())


def _meta(rule: SigmaRule) -> dict[str, Any]:
    """The rule's identity for alerts' ``rule.*`` (hub/alerts.py)."""
    meta: dict[str, Any] = {"id": str(rule.id) if rule.id else rule.title}
    if rule.id:
        meta["uuid"] = str(rule.id)
    if rule.references:
        meta["reference"] = [str(r) for r in rule.references]
    if rule.author:
        meta["author"] = [a.strip() for a in str(rule.author).split(",") if a.strip()]
    license_ = getattr(rule, "license", None) or (rule.custom_attributes or {}).get("license")
    if license_:
        meta["license"] = str(license_)
    return meta


def compile_sigma(text: str, source: str) -> CompiledRule:
    """Parse one Sigma rule (YAML text) into a compiled rule, or raise SigmaUnsupported."""
    try:
        rule = SigmaRule.from_yaml(text)
        parsed = [c.parsed for c in rule.detection.parsed_condition]
    except SigmaError as exc:
        raise SigmaUnsupported(f"pySigma: {exc}") from None
    except Exception as exc:  # pySigma raises plain errors on some malformed input
        raise SigmaUnsupported(f"pySigma: {type(exc).__name__}: {exc}") from None
    if getattr(rule.detection, "timeframe", None):
        raise SigmaUnsupported("timeframe (aggregation) rules are not supported")
    uses_hostname = any(_uses(p, "DestinationHostname") for p in parsed)
    condition = conj(_logsource(rule, uses_hostname), disj(*(_condition(p) for p in parsed)))
    level = rule.level.name.lower() if rule.level else "medium"
    try:
        compile_condition(condition)  # surface bad regexes as "unsupported", with the reason
        return CompiledRule(
            name=rule.title,
            engine="sigma",
            type="sigma",
            description=(rule.description or rule.title).strip(),
            score=LEVEL_SCORES.get(level, 30),
            tags=tuple(str(t) for t in rule.tags),
            condition=condition,
            source=source,
            extra={"sigma_id": str(rule.id) if rule.id else "", "level": level,
                   "file": source},
            meta=_meta(rule),
        )
    except QueryError as exc:
        raise SigmaUnsupported(str(exc)) from None
