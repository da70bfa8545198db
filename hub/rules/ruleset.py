"""Compiled rules and the index that picks, per event, only the rules that can match it.

Each rule's condition is analysed once: the set of ``event.action`` values it can match
(from conditions on ``event.action`` or ``event.category``) picks its bucket, and
:func:`requirement` finds literals of which every match carries at least one: a field value
(``process.name in (...)``, or Sigma's ``Image|endswith: /bash`` which implies the
executable's basename), looked up in a dict, or a substring of a field's text
(``contains``/``startswith``/``endswith`` values, literals a regex or glob cannot match
without), found with one Aho-Corasick pass (pyahocorasick) per field. An ``or`` may require
different fields in its branches. An event is then checked against the rules of its action's
bucket that require nothing, plus those whose literals it carries.
``match_brute`` evaluates every rule and exists to test that the index never changes results.
"""

from __future__ import annotations

import fnmatch
import re
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import ahocorasick

from threatseer.hub.indicators import Indicator
from threatseer.hub.rules.query.ast import And, Cmp, Const, Node, Or
from threatseer.hub.rules.query.compiler import (
    Predicate,
    as_str,
    compile_condition,
    equality_set,
)
from threatseer.hub.rules.regex_literals import required_literals
from threatseer.sensor import ecs

_TEMPLATE_FIELD = re.compile(r"\{([\w.@\[\]-]+)\}")
_BASENAME_SUFFIX = re.compile(r"/[^/]+\Z")


def render(template: str, event: dict[str, Any]) -> str:
    """Fill ``{dotted.field}`` placeholders from the event ("<NA>" when absent)."""

    def sub(m: re.Match[str]) -> str:
        value = event.get(m.group(1))
        if value is None:
            return "<NA>"
        return " ".join(map(str, value)) if isinstance(value, list) else str(value)

    return _TEMPLATE_FIELD.sub(sub, template)


@dataclass(eq=False)
class CompiledRule:
    name: str
    engine: str  # "dynamic" or "sigma"
    type: str  # indicator type: "query" or "sigma"
    description: str
    score: int
    tags: tuple[str, ...]
    condition: Node  # including exceptions
    output: str = ""
    source: str = ""  # file:line
    extra: dict[str, Any] = field(default_factory=dict)
    predicate: Predicate = field(init=False, repr=False)
    # The predicate without the top-level event.action tests, which the index already
    # guarantees for every bucket the rule is filed in.
    residual: Predicate = field(init=False, repr=False)
    order: int = 0

    def __post_init__(self) -> None:
        self.predicate = compile_condition(self.condition)
        self.residual = compile_condition(strip_action_tests(self.condition))

    def indicator(self, event: dict[str, Any]) -> Indicator:
        extra = dict(self.extra)
        if self.output:
            extra["output"] = render(self.output, event)
        return Indicator(self.engine, self.name, self.type, self.description, self.score,
                         self.tags, extra)


# ---- condition analysis -------------------------------------------------------------

_ACTIONS_BY_CATEGORY: dict[str, set[str]] = defaultdict(set)
for _action, (_cats, _types) in ecs.CATEGORIES.items():
    for _cat in _cats:
        _ACTIONS_BY_CATEGORY[_cat].add(_action)


def possible_actions(node: Node) -> frozenset[str] | None:
    """The event.action values ``node`` can match, or None when it is not constrained."""
    if isinstance(node, Cmp):
        if node.field.index is not None or node.field.fallbacks or node.op != "=":
            return None
        values = [str(v).lower() if node.nocase else str(v) for v in node.values]
        if node.field.name == "event.action":
            return frozenset(values)
        if node.field.name == "event.category":
            return frozenset(a for v in values for a in _ACTIONS_BY_CATEGORY.get(v, ()))
        return None
    if isinstance(node, And):
        sets = [s for s in map(possible_actions, node.items) if s is not None]
        return frozenset.intersection(*sets) if sets else None
    if isinstance(node, Or):
        sets = [possible_actions(i) for i in node.items]
        if any(s is None for s in sets):
            return None
        return frozenset().union(*sets)  # type: ignore[arg-type]
    return None


def _is_action_test(node: Node) -> bool:
    return (isinstance(node, Cmp) and node.op == "=" and node.field.name == "event.action"
            and node.field.index is None and not node.field.fallbacks and not node.nocase)


def strip_action_tests(node: Node) -> Node:
    """``node`` without top-level ``event.action = ...`` conjuncts.

    Every top-level action test contains all of the rule's possible actions (their
    intersection), so within the rule's buckets they always hold.
    """
    if _is_action_test(node):
        return Const(True)
    if isinstance(node, And):
        rest = [i for i in node.items if not _is_action_test(i)]
        if not rest:
            return Const(True)
        return rest[0] if len(rest) == 1 else And(tuple(rest))
    return node


KeySpec = tuple[str, str, bool]  # (kind "eq"|"base", field, nocase)


def literal_key(node: Node) -> tuple[KeySpec, frozenset[Any]] | None:
    """A field literal every match of ``node`` must carry, as (spec, values)."""
    if isinstance(node, Cmp):
        f = node.field
        if f.index is not None or f.fallbacks or f.name in ("event.action", "event.category"):
            return None
        if node.op == "=":
            return ("eq", f.name, node.nocase), equality_set(node.values, node.nocase)
        if node.op == "endswith" and f.name == "process.executable" and all(
            isinstance(v, str) and _BASENAME_SUFFIX.match(v) for v in node.values
        ):
            vals = frozenset(v[1:].lower() if node.nocase else v[1:] for v in node.values)
            return ("base", f.name, node.nocase), vals
        return None
    if isinstance(node, And):
        keys = [k for k in map(literal_key, node.items) if k is not None]
        if not keys:
            return None
        eq = [k for k in keys if k[0][0] == "eq"]
        return min(eq or keys, key=lambda k: len(k[1]))
    if isinstance(node, Or):
        keys = [literal_key(i) for i in node.items]
        if not keys or any(k is None for k in keys):
            return None
        specs = {k[0] for k in keys if k}
        if len(specs) != 1:
            return None
        return specs.pop(), frozenset().union(*(k[1] for k in keys if k))
    return None


_SUBSTRING_OPS = ("contains", "startswith", "endswith")


def required_substrings(node: Node) -> tuple[str, frozenset[str]] | None:
    """(field, needles): ``node`` can only hold if the field's lower-cased text contains
    one of the needles (from contains/startswith/endswith literals)."""
    if isinstance(node, Cmp):
        f = node.field
        if (f.index is not None or f.fallbacks or node.op not in _SUBSTRING_OPS
                or not node.values or not all(isinstance(v, str) and v for v in node.values)):
            return None
        return f.name, frozenset(v.lower() for v in node.values)
    if isinstance(node, And):
        found = [k for k in map(required_substrings, node.items) if k is not None]
        if not found:
            return None
        # The most selective: the shortest needle longest, then the fewest needles.
        return max(found, key=lambda k: (min(map(len, k[1])), -len(k[1])))
    if isinstance(node, Or):
        found = [required_substrings(i) for i in node.items]
        if not found or any(k is None for k in found):
            return None
        fields = {k[0] for k in found if k}
        if len(fields) != 1:
            return None
        return fields.pop(), frozenset().union(*(k[1] for k in found if k))
    return None


# A rule's requirement: alternatives (spec -> values) of which at least one must hold for the
# rule to match. "sub" specs are needles in the field's lower-cased text (Aho-Corasick).
Requirement = dict[KeySpec, frozenset[Any]]
_HASHED = 1000  # strength of an "eq"/"base" atom: one dict lookup, exact


def _cmp_requirement(node: Cmp) -> Requirement | None:
    key = literal_key(node)
    if key is not None:
        return {key[0]: key[1]}
    subs = required_substrings(node)
    if subs is not None:
        needles = frozenset(n for n in subs[1] if n.isascii())
        if len(needles) == len(subs[1]):
            return {("sub", subs[0], False): needles}
        return None
    f = node.field
    if node.op in ("regex", "glob") and f.index is None and not f.fallbacks and node.values:
        found: set[str] = set()
        for v in node.values:
            text = v if isinstance(v, str) else str(v)
            lits = required_literals(fnmatch.translate(text) if node.op == "glob" else text)
            if lits is None:
                return None
            found |= lits
        return {("sub", f.name, False): frozenset(found)}
    return None


def _strength(req: Requirement) -> tuple[int, int]:
    """How selective a requirement is: its weakest atom, then fewer values."""
    weakest = min(_HASHED if spec[0] != "sub" else min(map(len, vals), default=0)
                  for spec, vals in req.items())
    return weakest, -sum(map(len, req.values()))


def requirement(node: Node) -> Requirement | None:
    """Literals of which every match of ``node`` carries at least one, or None.

    Unlike :func:`literal_key` and :func:`required_substrings`, the branches of an ``or`` may
    require different fields (``Image endswith /ufw-init or CommandLine contains 'ufw '``), and
    regex and glob literals count, so far fewer rules are left for every event.
    """
    if isinstance(node, Cmp):
        return _cmp_requirement(node)
    if isinstance(node, And):
        found = [r for r in map(requirement, node.items) if r]
        return max(found, key=_strength) if found else None
    if isinstance(node, Or):
        merged: dict[KeySpec, frozenset[Any]] = {}
        for item in node.items:
            req = requirement(item)
            if not req:
                return None
            for spec, vals in req.items():
                merged[spec] = merged.get(spec, frozenset()) | vals
        return merged or None
    return None


def _search_text(value: Any) -> str | None:
    """The field's text for needle search, lower-cased; None when not ASCII (then every rule
    filed under the field is a candidate: Unicode case rules differ from ASCII's)."""
    if value.__class__ is str:
        text = value
    elif value.__class__ is list:
        text = "\0".join(x if x.__class__ is str else as_str(x) for x in value)
    else:
        text = as_str(value)
    return text.lower() if text.isascii() else None


def _lookup_keys(spec: KeySpec, value: Any) -> Iterable[Any]:
    kind, _, nocase = spec
    items = value if value.__class__ is list else (value,)
    for x in items:
        if kind == "base":
            if x.__class__ is not str or "/" not in x:
                continue
            x = x.rpartition("/")[2]
        if nocase and x.__class__ is str:
            x = x.lower()
        if x.__hash__ is not None:
            yield x


@dataclass
class _Bucket:
    general: list[CompiledRule] = field(default_factory=list)
    keyed: dict[KeySpec, dict[Any, list[CompiledRule]]] = field(default_factory=dict)
    # field -> needle -> rules; turned into one Aho-Corasick automaton per field by seal().
    needles: dict[str, dict[str, list[CompiledRule]]] = field(default_factory=dict)
    # (field, automaton, every rule filed under the field: the answer for non-ASCII text)
    automata: list[tuple[str, Any, tuple[CompiledRule, ...]]] = field(default_factory=list)
    keyed_items: tuple[tuple[KeySpec, dict[Any, list[CompiledRule]]], ...] = ()

    def add(self, rule: CompiledRule, req: Requirement | None) -> None:
        if not req:
            self.general.append(rule)
            return
        for spec, values in req.items():
            if spec[0] == "sub":
                table = self.needles.setdefault(spec[1], {})
                for needle in values:
                    table.setdefault(needle, []).append(rule)
            else:
                keyed = self.keyed.setdefault(spec, {})
                for value in values:
                    keyed.setdefault(value, []).append(rule)

    def seal(self) -> None:
        self.keyed_items = tuple(self.keyed.items())
        for name, table in self.needles.items():
            automaton = ahocorasick.Automaton()
            for needle, rules in table.items():
                automaton.add_word(needle, tuple(rules))
            automaton.make_automaton()
            every = tuple(dict.fromkeys(r for rules in table.values() for r in rules))
            self.automata.append((name, automaton, every))


def _order(rule: CompiledRule) -> int:
    return rule.order


class IndexedRuleSet:
    """The bundle's compiled dynamic and Sigma rules (implements model.RuleSet)."""

    def __init__(self, rules: Iterable[CompiledRule]) -> None:
        self.rules: list[CompiledRule] = list(rules)
        for i, rule in enumerate(self.rules):
            rule.order = i
        self.by_name = {r.name: r for r in self.rules}
        analysed = [(r, possible_actions(r.condition), requirement(r.condition))
                    for r in self.rules]
        actions = sorted({a for _, acts, _ in analysed if acts for a in acts})
        self._buckets = {a: _Bucket() for a in actions}
        self._default = _Bucket()  # events whose action no rule names
        for rule, acts, req in analysed:
            targets = [self._buckets[a] for a in acts] if acts is not None else [
                *self._buckets.values(), self._default]
            for bucket in targets:
                bucket.add(rule, req)
        for bucket in (*self._buckets.values(), self._default):
            bucket.seal()

    def __len__(self) -> int:
        return len(self.rules)

    def candidates(self, event: dict[str, Any]) -> list[CompiledRule]:
        """The rules that can match ``event`` (each once; the rest cannot match it)."""
        action = event.get("event.action")
        bucket = self._buckets.get(action, self._default) if action.__class__ is str else \
            self._default
        found = dict.fromkeys(bucket.general)
        for spec, table in bucket.keyed_items:
            value = event.get(spec[1])
            if value is None:
                continue
            for k in _lookup_keys(spec, value):
                rules = table.get(k)
                if rules is not None:
                    found.update(dict.fromkeys(rules))
        for name, automaton, every in bucket.automata:
            value = event.get(name)
            if value is None:
                continue
            text = _search_text(value)
            if text is None:
                found.update(dict.fromkeys(every))
                continue
            for _, rules in automaton.iter(text):
                found.update(dict.fromkeys(rules))
        return list(found)

    def matching_rules(self, event: dict[str, Any]) -> list[CompiledRule]:
        action = event.get("event.action")
        if action.__class__ is str and action in self._buckets:
            hits = [r for r in self.candidates(event) if r.residual(event)]
        else:
            hits = [r for r in self.candidates(event) if r.predicate(event)]
        if len(hits) > 1:
            hits.sort(key=_order)
        return hits

    def match(self, event: dict[str, Any]) -> list[Indicator]:
        return [r.indicator(event) for r in self.matching_rules(event)]

    def match_brute(self, event: dict[str, Any]) -> list[CompiledRule]:
        """Every rule whose condition holds, without the index (for tests)."""
        return [r for r in self.rules if r.predicate(event)]
