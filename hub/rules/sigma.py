"""Sigma rules (parsed by pySigma) translated into the query AST, so they share the
evaluator and the index with the bundle's own rules.

A rule first goes through a pySigma processing pipeline
(:mod:`threatseer.hub.rules.sigma_pipeline`, plus the bundle's own pipelines), which maps its
log source to the events that answer it and its fields to ECS; what is translated here names
ECS fields only. Supported: the log sources and fields that pipeline maps (Linux
process_creation, process_termination, file_event, file_delete, network_connection, auditd);
the value types pySigma produces for the modifiers those rules use (contains, startswith,
endswith, all, re, cidr, windash, base64, base64offset, exists, cased, lt/gt...). Strings match
case-insensitively, as Sigma specifies, unless ``|cased``. Anything else raises
:class:`SigmaUnsupported` with the reason, which the bundle loader reports in
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
from sigma.exceptions import SigmaError, SigmaTransformationError
from sigma.processing.pipeline import ProcessingPipeline
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

from threatseer.common import ecs
from threatseer.hub.rules.query.ast import Cmp, Field, Node, Not, conj, disj
from threatseer.hub.rules.query.compiler import compile_condition
from threatseer.hub.rules.query.errors import QueryError
from threatseer.hub.rules.ruleset import CompiledRule
from threatseer.hub.rules.sigma_pipeline import KEYWORD_FIELD, LOGSOURCE_PREFIX, default_pipeline


class SigmaUnsupported(ValueError):
    """A Sigma rule this hub cannot evaluate; ``str()`` is the reason."""


LEVEL_SCORES = {"informational": 5, "low": 15, "medium": 30, "high": 60, "critical": 90}

_INDEXED = re.compile(r"([\w.@]+)\[(\d{1,2})\]\Z")


def _field(name: str) -> Field:
    """The ECS field a (pipeline-mapped) rule names; ``name[N]`` is the Nth list element."""
    indexed = _INDEXED.match(name)
    base, index = (indexed.group(1), int(indexed.group(2))) if indexed else (name, None)
    if ecs.field(base) is None and not base.startswith("threatseer."):
        raise SigmaUnsupported(f"field {name!r} has no ECS mapping")
    return Field(base, index)


def _python_regex(pattern: str) -> str:
    """``pattern`` with inline global flags after its start (``ab(?i)c``, which PCRE applies to
    the rest of the enclosing group and Python refuses) turned into scoped groups
    (``ab(?i:c)``), each alternative of that group wrapped alike."""
    out: list[str] = []
    stack: list[str] = [""]  # per open group: the flags switched on inside it so far
    i, n, in_class = 0, len(pattern), False
    while i < n:
        c = pattern[i]
        if c == "\\":
            out.append(pattern[i:i + 2])
            i += 2
            continue
        if in_class:
            in_class = c != "]"
            out.append(c)
            i += 1
            continue
        if c == "[":
            in_class = True
            out.append(c)
            # a ']' right after '[' or '[^' is literal
            if pattern[i + 1:i + 2] == "^":
                out.append("^")
                i += 1
            if pattern[i + 1:i + 2] == "]":
                out.append("]")
                i += 1
            i += 1
            continue
        flags = _INLINE_FLAGS.match(pattern, i)
        if flags is not None and (i > 0 or len(stack) > 1):
            out.append(f"(?{flags.group(1)}:")
            stack[-1] += "\0" + flags.group(1)
            i = flags.end()
            continue
        if c == "(":
            stack.append("")
        elif c == ")" or c == "|":
            opened = stack[-1].split("\0")[1:]
            out.append(")" * len(opened))
            if c == "|":
                out.append("|")
                out.extend(f"(?{f}:" for f in opened)
                i += 1
                continue
            if len(stack) > 1:
                stack.pop()
        out.append(c)
        i += 1
    out.append(")" * len(stack[-1].split("\0")[1:]))
    return "".join(out)


_INLINE_FLAGS = re.compile(r"\(\?([aiLmsux]+(?:-[imsx]+)?|-[imsx]+)\)")


def _string(field: Field, value: SigmaString) -> Node:
    # event.action values are the pipeline's own, exact: the rule index files the rule by them
    nocase = not isinstance(value, SigmaCasedString) and field.name != "event.action"
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


def _keyword(field_name: str | None, value: Any) -> Node:
    """A keyword (field-less) value: a substring of ``field_name``'s text."""
    if field_name is None:
        raise SigmaUnsupported("keyword (field-less) detection is not supported for this "
                               "log source")
    if isinstance(value, SigmaExpansion):
        return disj(*(_keyword(field_name, v) for v in value.values))
    if isinstance(value, SigmaNumber):
        value = SigmaString(str(value.number))
    if isinstance(value, SigmaString):
        return _string(Field(field_name), SigmaString("*") + value + SigmaString("*"))
    if isinstance(value, SigmaRegularExpression):
        return _value(field_name, value)
    raise SigmaUnsupported(f"keyword value type {type(value).__name__} is not supported")


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
        pattern = _python_regex(value.regexp.to_plain())
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


def _condition(node: Any, keyword_field: str | None) -> Node:
    if isinstance(node, ConditionAND):
        return conj(*(_condition(a, keyword_field) for a in node.args))
    if isinstance(node, ConditionOR):
        return _merge_or([_condition(a, keyword_field) for a in node.args])
    if isinstance(node, ConditionNOT):
        return Not(_condition(node.args[0], keyword_field))
    if isinstance(node, ConditionFieldEqualsValueExpression):
        return _value(node.field, node.value)
    if isinstance(node, ConditionValueExpression):
        return _keyword(keyword_field, node.value)
    raise SigmaUnsupported(f"condition element {type(node).__name__} is not supported")


_DEFAULT_PIPELINE: list[ProcessingPipeline] = []


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


def compile_sigma(text: str, source: str,
                  pipeline: ProcessingPipeline | None = None) -> CompiledRule:
    """Parse one Sigma rule (YAML text), map it with ``pipeline`` (the default pipeline when
    None; see sigma_pipeline.pipeline_for) and compile it, or raise SigmaUnsupported."""
    if pipeline is None:
        if not _DEFAULT_PIPELINE:
            _DEFAULT_PIPELINE.append(default_pipeline())
        pipeline = _DEFAULT_PIPELINE[0]
    try:
        rule = SigmaRule.from_yaml(text)
        product = rule.logsource.product
        if product not in (None, "linux"):
            raise SigmaUnsupported(f"logsource product {product!r} is not linux")
        pipeline.apply(rule)
        parsed = [c.parsed for c in rule.detection.parsed_condition]
    except SigmaTransformationError as exc:  # the pipeline's own reasons
        raise SigmaUnsupported(str(exc).split("\n")[0]) from None
    except SigmaError as exc:
        raise SigmaUnsupported(f"pySigma: {exc}") from None
    except SigmaUnsupported:
        raise
    except Exception as exc:  # pySigma raises plain errors on some malformed input
        raise SigmaUnsupported(f"pySigma: {type(exc).__name__}: {exc}") from None
    if not any(i.startswith(LOGSOURCE_PREFIX) for i in pipeline.applied_ids):
        ls = rule.logsource
        what = f"service {ls.service!r}" if ls.service else f"category {ls.category!r}"
        raise SigmaUnsupported(f"logsource {what} is not supported")
    if getattr(rule.detection, "timeframe", None):
        raise SigmaUnsupported("timeframe (aggregation) rules are not supported")
    keyword_field = pipeline.state.get(KEYWORD_FIELD)
    condition = disj(*(_condition(p, keyword_field) for p in parsed))
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
