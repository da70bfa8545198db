"""Compiled rules and the index that picks, per event, only the rules that can match it.

Each rule's condition is analysed once: the set of ``event.action`` values it can match
(from conditions on ``event.action`` or ``event.category``) picks its bucket, and
:func:`requirement` finds literals of which every match carries at least one: a field value
(``process.name in (...)``, or Sigma's ``Image|endswith: /bash`` which implies the
executable's basename), looked up in a dict, or a substring of a field's text
(``contains``/``startswith``/``endswith`` values, literals a regex or glob cannot match
without), found with one Aho-Corasick pass (pyahocorasick) per field. An ``or`` may require
different fields in its branches. An event is then checked against the rules of its action's
bucket that require nothing, plus those whose literals it carries. What a field value selects
is cached per distinct value, and rules with one condition (a Sigma rule loaded twice) are
evaluated once.
``match_brute`` evaluates every rule and exists to test that the index never changes results.
"""

from __future__ import annotations

import fnmatch
import re
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import ahocorasick

from threatseer.common import ecs
from threatseer.hub.indicators import Indicator
from threatseer.hub.rules import _rule_index as _native
from threatseer.hub.rules.query.ast import And, Cmp, Const, Field, Node, Or
from threatseer.hub.rules.query.compiler import (
    Predicate,
    as_str,
    compile_condition,
    equality_set,
)
from threatseer.hub.rules.regex_literals import required_literals

_TEMPLATE_FIELD = re.compile(r"\{([\w.@\[\]-]+)\}")
_BASENAME_SUFFIX = re.compile(r"/[^/]+\Z")


def _field_text(value: Any) -> str:
    if value is None:
        return "<NA>"
    return " ".join(map(str, value)) if isinstance(value, list) else str(value)


_PARTS: dict[str, tuple[list[str], tuple[str, ...]]] = {}


def _template_parts(template: str) -> tuple[list[str], tuple[str, ...]]:
    """``template`` split once into its text around the placeholders, and their fields:
    rendering is then a join, not a regex substitution with a callback per placeholder."""
    hit = _PARTS.get(template)
    if hit is None:
        if len(_PARTS) >= 4096:  # templates come from bundles: bound what reloads leave
            _PARTS.clear()
        pieces = _TEMPLATE_FIELD.split(template)  # text, field, text, field, ..., text
        hit = _PARTS[template] = (pieces, tuple(pieces[1::2]))
    return hit


def render(template: str, event: dict[str, Any]) -> str:
    """Fill ``{dotted.field}`` placeholders from the event ("<NA>" when absent)."""
    pieces, fields = _template_parts(template)
    if not fields:
        return template
    out = list(pieces)
    i = 1
    for f in fields:  # a loop, not a comprehension and a call per field: most are str
        v = event.get(f)
        out[i] = v if v.__class__ is str else _field_text(v)
        i += 2
    return "".join(out)


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
    # What an alert names the rule by (hub/alerts.py: rule.id, uuid, reference, author,
    # license); kept off the indicators, which every match copies.
    meta: dict[str, Any] = field(default_factory=dict)
    action: str = ""  # "kill" (hub/rules/model.py KILL) or "" (alerting only)
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

    def indicator_dict(self, event: dict[str, Any]) -> dict[str, Any]:
        """``indicator(event).as_dict()`` without the Indicator: one dict display, its keys
        in :meth:`Indicator.as_dict`'s order (tests/rules/test_indicator_dict.py)."""
        extra = self.extra.copy()
        if self.output:
            extra["output"] = render(self.output, event)
        return {"engine": self.engine, "rule": self.name, "type": self.type,
                "description": self.description, "extra_info": extra, "score": self.score,
                "tags": list(self.tags)}


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


KeySpec = tuple[str, Any, bool]  # (kind "eq"|"base"|"sub", field or fallback names, nocase)


def _element_of_list(f: Field) -> bool:
    """``process.args[1]``: what its element holds, the list holds; the index looks lists up
    item by item (and searches their joined text), so the list's entries serve."""
    return f.index is not None and f.name in LIST_FIELDS and not f.fallbacks


def literal_key(node: Node) -> tuple[KeySpec, frozenset[Any]] | None:
    """A field literal every match of ``node`` must carry, as (spec, values)."""
    if isinstance(node, Cmp):
        f = node.field
        if _element_of_list(f):
            node = Cmp(Field(f.name), node.op, node.values, node.nocase)
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
        if _element_of_list(f):
            f = Field(f.name)
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
# rule to match. "sub" specs are needles in the field's lower-cased text (Aho-Corasick). A
# field with fallbacks (Sigma's DestinationHostname) is the tuple of its names, first present
# wins, as in the compiled condition.
Requirement = dict[KeySpec, frozenset[Any]]
# Fields whose values most events share: filing a rule under them filters almost nothing.
LOW_CARDINALITY = frozenset((
    "threatseer.open.flags", "network.direction", "network.transport", "event.type",
    "event.kind", "event.outcome", "user.id", "process.user.id", "host.os.type",
))
_EXACT_BONUS = 8  # an "eq"/"base" value is matched whole, a needle anywhere: worth more
# List fields cost a lookup per element and cannot use the per-value cache of text fields:
# another literal of the rule is preferred unless it is much weaker.
LIST_FIELDS = frozenset(("process.args", "threatseer.ancestors"))
_LIST_PENALTY = 6


def _cmp_requirement(node: Cmp) -> Requirement | None:
    f = node.field
    if _element_of_list(f):
        node = Cmp(Field(f.name), node.op, node.values, node.nocase)
        f = node.field
    if f.index is not None:
        return None
    plain = Cmp(Field(f.name), node.op, node.values, node.nocase) if f.fallbacks else node
    where: str | tuple[str, ...] = (f.name, *f.fallbacks) if f.fallbacks else f.name
    key = literal_key(plain)
    if key is not None:
        return {(key[0][0], where, key[0][2]): key[1]}
    subs = required_substrings(plain)
    if subs is not None:
        needles = frozenset(n for n in subs[1] if n.isascii())
        if len(needles) == len(subs[1]):
            return {("sub", where, False): needles}
        return None
    if node.op in ("regex", "glob") and node.values:
        found: set[str] = set()
        for v in node.values:
            text = v if isinstance(v, str) else str(v)
            lits = required_literals(fnmatch.translate(text) if node.op == "glob" else text)
            if lits is None:
                return None
            found |= lits
        return {("sub", where, False): frozenset(found)}
    return None


def _strength(req: Requirement) -> tuple[int, int]:
    """How selective a requirement is: its weakest atom (shortest value or needle; nothing
    for a low-cardinality field), then fewer values."""
    weakest = min(
        0 if spec[1] in LOW_CARDINALITY
        else min((len(as_str(v)) for v in vals), default=0)
        + (_EXACT_BONUS if spec[0] != "sub" else 0)
        - (_LIST_PENALTY if spec[1] in LIST_FIELDS else 0)
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


def _conjuncts(node: Node) -> list[Node]:
    """The items of ``node``'s top-level ``and`` (nested ones flattened), else [node]."""
    if isinstance(node, And):
        return [c for item in node.items for c in _conjuncts(item)]
    return [node]


def _single_field(req: Requirement) -> Any:
    """The one field (name, or tuple of fallback names) all of ``req``'s specs look at, or
    None when they look at several."""
    wheres = {spec[1] for spec in req}
    return wheres.pop() if len(wheres) == 1 else None


def second_requirement(node: Node, first: Requirement | None) -> Requirement | None:
    """Another requirement every match of ``node`` meets *as well as* ``first``, on another
    field, or None.

    A conjunct of a top-level ``and`` is necessary on its own, so an event must carry a literal
    of each of two conjuncts' requirements: the index then files the rule under both fields
    and selects it only when both found it (``process.name in (grep, ls, ...)`` *and* a
    command line containing one of the security products looked for). Both requirements must
    look at one field each (a rule found twice through one requirement spanning two fields
    would otherwise look as if both held); low-cardinality fields filter nothing.
    """
    if first is None or not isinstance(node, And):
        return None
    taken = _single_field(first)
    if taken is None:
        return None
    best: Requirement | None = None
    for item in _conjuncts(node):
        req = requirement(item)
        if not req:
            continue
        where = _single_field(req)
        if where is None or where == taken or where in LOW_CARDINALITY:
            continue
        if best is None or _strength(req) > _strength(best):
            best = req
    return best


class _Group(_native.Group):
    """Rules with one condition (a bundle may carry a Sigma rule twice): evaluated once.

    ``needs``: 2 when the group is filed under two requirements that must both hold.
    ``gate``: when every rule of the group is a sequence step, its steps (:meth:`seal`); the
    engine evaluates the condition only if one of them
    :meth:`~threatseer.hub.rules.sequence.SequenceRule.may_advance` (a step's match that its
    sequence would ignore adds nothing)."""

    __slots__ = ()  # its fields are the native base's (C fields the hot loop reads)

    def __init__(self, rule: CompiledRule) -> None:
        self.predicate, self.residual = rule.predicate, rule.residual
        self.rules = [rule]
        self.gate: tuple[tuple[Any, int], ...] | None = None
        # How many of the bucket's field lookups must find the group (2: filed under two
        # requirements, both necessary: :func:`second_requirement`).
        self.needs = 1

    def seal(self) -> None:
        """Make ``gate``: per step, ``(sequence, step, idle_skips, names)``, where
        ``idle_skips`` says the step is ignored while its sequence holds no partial match
        (a later step of an ordered sequence) and ``names`` are the join fields when all are
        plain fields (checked in C; else None and ``may_advance`` decides)."""
        gate = []
        for r in self.rules:
            seq = getattr(r, "sequence", None)
            if seq is None:
                self.gate = None
                return
            step = r.index  # type: ignore[attr-defined]
            by = seq.steps[step].by
            names = None if any(f.index is not None for f in by) else tuple(f.name for f in by)
            gate.append((seq, step, bool(step and seq.sequence.ordered), names))
        self.gate = tuple(gate)


def _split(groups: Iterable[_Group]) -> tuple[tuple[_Group, ...], tuple[_Group, ...]]:
    """``groups`` as (those selected by this field alone, those that need another field)."""
    groups = list(dict.fromkeys(groups))
    return (tuple(g for g in groups if g.needs == 1), tuple(g for g in groups if g.needs != 1))


class _FieldIndex:
    """What one bucket files under one field: values looked up, needles searched.

    Results are cached per distinct value (executables, names, paths, argv, ports repeat
    endlessly); the lookup itself is native (native/_rule_index.pyx: ``lookup``).
    """

    def __init__(self, where: str | tuple[str, ...]) -> None:
        self.where = where
        self.tables: list[tuple[KeySpec, dict[Any, list[_Group]]]] = []
        self.needles: dict[str, list[_Group]] = {}
        self.automaton: Any = None
        self.every: tuple[_Group, ...] = ()  # every needle's groups: for non-ASCII text
        self.cache: dict[Any, tuple[tuple[_Group, ...], tuple[_Group, ...]]] = {}
        # What native/_rule_index.pyx's ``lookup`` reads, made by seal(): (cache, tables as
        # (basename?, nocase?, value -> split groups), automaton of needle -> split groups,
        # every needle's split groups, one copy of each result the cache holds, [characters
        # of the cache's keys]); "split": (needs 1, needs 2) (see _split).
        self.native: tuple[Any, ...] = ()

    def seal(self) -> None:
        if self.needles:
            self.automaton = ahocorasick.Automaton()
            for needle, groups in self.needles.items():
                self.automaton.add_word(needle, _split(groups))
            self.automaton.make_automaton()
            self.every = tuple(dict.fromkeys(g for gs in self.needles.values() for g in gs))
        tables = tuple((spec[0] == "base", bool(spec[2]),
                        {value: _split(groups) for value, groups in table.items()})
                       for spec, table in self.tables)
        self.native = (self.cache, tables, self.automaton, _split(self.every), {}, [0])

    def lookup(self, value: Any) -> tuple[tuple[_Group, ...], tuple[_Group, ...]]:
        """(groups this field selects alone, groups it selects with another field)."""
        return _native.lookup(self, value)


class _Bucket(_native.Bucket):
    """The rule groups of one ``event.action`` (see native/_rule_index.pyx for the lookup;
    ``general_t`` and ``field_list`` are C fields of the native base)."""

    def __init__(self) -> None:
        self.general: list[_Group] = []
        self.fields: dict[Any, _FieldIndex] = {}
        self.field_list: tuple[tuple[Any, dict[Any, Any], tuple[Any, ...]], ...] = ()
        self.general_t: tuple[_Group, ...] = ()

    def add(self, group: _Group, req: Requirement | None,
            also: Requirement | None = None) -> None:
        """File ``group`` under ``req`` (every match carries one of its literals), and under
        ``also`` when given (a second one on another field, every match carries one of
        both: the group is then a candidate only when both lookups find it)."""
        if not req:
            self.general.append(group)
            return
        if also:
            self._file(group, also)
        self._file(group, req)

    def _file(self, group: _Group, req: Requirement) -> None:
        for spec, values in req.items():
            fi = self.fields.get(spec[1])
            if fi is None:
                fi = self.fields[spec[1]] = _FieldIndex(spec[1])
            if spec[0] == "sub":
                for needle in values:
                    fi.needles.setdefault(needle, []).append(group)
            else:
                table = next((t for sp, t in fi.tables if sp == spec), None)
                if table is None:
                    table = {}
                    fi.tables.append((spec, table))
                for value in values:
                    table.setdefault(value, []).append(group)

    def seal(self) -> None:
        for fi in self.fields.values():
            fi.seal()
        self.field_list = tuple((fi.where, fi.cache, fi.native) for fi in self.fields.values())
        self.general_t = tuple(self.general)

    def empty(self) -> bool:
        return not self.general_t and not self.field_list

    def candidates(self, event: dict[str, Any]) -> tuple[_Group, ...]:
        return _native.candidates(self, event)


class IndexedRuleSet:
    """The bundle's compiled dynamic and Sigma rules (implements model.RuleSet)."""

    def __init__(self, rules: Iterable[CompiledRule]) -> None:
        self.rules: list[CompiledRule] = list(rules)
        for i, rule in enumerate(self.rules):
            rule.order = i
        self.by_name = {r.name: r for r in self.rules}
        for r in self.rules:  # a sequence's alerts name the sequence, not a step
            seq = getattr(r, "sequence", None)
            if seq is not None:
                self.by_name.setdefault(seq.name, r)
        groups: dict[Node, _Group] = {}
        analysed = []
        for r in self.rules:
            group = groups.get(r.condition)
            if group is not None:
                group.rules.append(r)
                continue
            group = groups[r.condition] = _Group(r)
            req = requirement(r.condition)
            also = second_requirement(r.condition, req)
            group.needs = 2 if also else 1
            analysed.append((group, possible_actions(r.condition), req, also))
        for group, *_ in analysed:
            group.seal()
        actions = sorted({a for _, acts, _, _ in analysed if acts for a in acts})
        self._buckets = {a: _Bucket() for a in actions}
        self._default = _Bucket()  # events whose action no rule names
        for group, acts, req, also in analysed:
            targets = [self._buckets[a] for a in acts] if acts is not None else [
                *self._buckets.values(), self._default]
            for bucket in targets:
                bucket.add(group, req, also)
        for bucket in (*self._buckets.values(), self._default):
            bucket.seal()

    def __len__(self) -> int:
        return len(self.rules)

    def candidates(self, event: dict[str, Any]) -> list[CompiledRule]:
        """The rules that can match ``event`` (each once; the rest cannot match it)."""
        action = event.get("event.action")
        bucket = self._buckets.get(action, self._default) if action.__class__ is str else \
            self._default
        return [r for g in bucket.candidates(event) for r in g.rules]

    def matching_rules(self, event: dict[str, Any]) -> list[CompiledRule]:
        """The rules ``event`` matches, in rule order, through the engine's own matcher
        (native/_rule_index.pyx), so that a rule's tests exercise what production runs."""
        return _native.matching(self._buckets, self._default, event)

    def match(self, event: dict[str, Any]) -> list[Indicator]:
        found = [r.indicator(event) for r in self.matching_rules(event)]
        return [i for i in found if i is not None]

    def add_indicators(self, events: list[dict[str, Any]],
                       failed: Callable[[Exception], None]) -> None:
        """Extend each event's ``threatseer.indicators`` with ``match_dicts(event)``: the
        dynamic engine's whole loop in one call per batch, in C (native/_rule_index.pyx).
        An event whose rules raise gets none of them and is passed to ``failed``.
        """
        _native.add_indicators(self._buckets, self._default, events, failed)

    def match_dicts(self, event: dict[str, Any]) -> list[dict[str, Any]]:
        """``[i.as_dict() for i in match(event)]`` without the Indicator objects."""
        found = [r.indicator_dict(event) for r in self.matching_rules(event)]
        return [i for i in found if i is not None]

    @property
    def sequences(self) -> list[Any]:
        """The sequence rules whose steps are in this set (hub.rules.sequence)."""
        out = {id(s): s for r in self.rules if (s := getattr(r, "sequence", None)) is not None}
        return list(out.values())

    def reset_sequences(self) -> None:
        """Forget every partial sequence (after a bundle's tests ran through it)."""
        for seq in self.sequences:
            seq.reset()

    def match_brute(self, event: dict[str, Any]) -> list[CompiledRule]:
        """Every rule whose condition holds, without the index (for tests)."""
        return [r for r in self.rules if r.predicate(event)]
