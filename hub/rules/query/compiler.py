"""AST -> Python: the whole condition becomes one generated function over ``event.get``.

Everything that can be done once is done here (regexes and globs compiled, lists turned
into sets, case folded), so evaluating an event is a few dict lookups and string operations.

Regexes (``regex`` comparisons, and the Sigma wildcards and ``|re`` values that become them)
run in RE2 (google-re2), whose time is linear in the text: an event's fields are the
attacker's to choose, and under Python's backtracking ``re`` one rule of the default bundle
held the pipeline 5.4 s on a 160 KB command line. A pattern RE2 cannot run (backreferences,
look-around) still works, under ``re`` on the first :data:`BACKTRACKING_MAX_CHARS` characters
of the value only, and ``threatseer rules validate`` names it (:func:`backtracking_patterns`).
Globs stay with ``re``: ``fnmatch.translate`` writes them so they do not backtrack.
"""

from __future__ import annotations

import contextlib
import fnmatch
import ipaddress
import re
from collections.abc import Callable
from typing import Any

from threatseer.hub.rules.query.ast import And, Cmp, Const, Field, Node, Not, Or
from threatseer.hub.rules.query.errors import QueryError
from threatseer.hub.rules.regex_literals import required_literals

try:  # Python >= 3.11
    from re import _constants as _re_constants
    from re import _parser as _re_parser
except ImportError:  # pragma: no cover - Python 3.10
    import sre_constants as _re_constants  # type: ignore[no-redef]
    import sre_parse as _re_parser  # type: ignore[no-redef]

try:
    import re2
except ImportError:  # a sensor-only install never scores; the hub extra brings google-re2
    re2 = None

Predicate = Callable[[dict[str, Any]], bool]
_TRUTH = {"true": True, "false": False}
# A pattern only Python's re can run sees at most this much of a value (its time can grow
# with a power of the length; RE2's never does).
BACKTRACKING_MAX_CHARS = 1024
# Python's \Z (end of text) is RE2's \z; an escaped backslash before it is not an escape.
_END_OF_TEXT = re.compile(r"(?<!\\)((?:\\\\)*)\\Z")


def _re2_options(nocase: bool) -> Any:
    opts = re2.Options()
    opts.log_errors = False  # a pattern RE2 refuses falls back (see the module doc)
    opts.dot_nl = True  # as re.DOTALL
    opts.never_capture = True  # a rule only asks whether it matches
    opts.case_sensitive = not nocase
    return opts


def regex_search(pattern: str, nocase: bool) -> Callable[[str], Any]:
    """A function of a str that is not None when ``pattern`` matches somewhere in it: RE2,
    or, for a pattern RE2 cannot run, Python's re on the value's first
    :data:`BACKTRACKING_MAX_CHARS` characters. re.error for a bad pattern."""
    flags = re.IGNORECASE | re.DOTALL if nocase else re.DOTALL
    rx = re.compile(pattern, flags)  # checks it
    # The fewest characters a match spans: an ASCII text shorter than that (a DNS name
    # under a 32-character label pattern) cannot match, and costs no call into RE2. Only
    # ASCII: there a character is one byte and one RE2 rune, whatever the text holds.
    shortest = _shortest_match(pattern, flags)
    if re2 is not None:
        try:
            compiled = re2.compile(_END_OF_TEXT.sub(r"\1\\z", pattern), _re2_options(nocase))
        except re2.error:
            compiled = None
        if compiled is not None:
            match, unanchored = compiled._regexp.Match, re2._Anchor.UNANCHORED

            def search(text: str) -> Any:
                if len(text) < shortest and text.isascii():
                    return None
                data = text.encode("utf-8", "surrogatepass")
                return True if match(unanchored, data, 0, len(data))[0][0] >= 0 else None

            return search
    cut = BACKTRACKING_MAX_CHARS
    find = rx.search
    return lambda text: find(text[:cut]) if len(text) > cut else find(text)


def _shortest_match(pattern: str, flags: int) -> int:
    """The minimum length of a match of ``pattern`` (0 when unknown)."""
    try:
        return int(_re_parser.parse(pattern, flags).getwidth()[0])
    except (re.error, RecursionError, OverflowError, TypeError, ValueError):
        return 0


def needs_backtracking(pattern: str) -> bool:
    """Whether RE2 cannot run ``pattern`` (it then runs under Python's re, cut short)."""
    if re2 is None:
        return True
    try:
        re2.compile(_END_OF_TEXT.sub(r"\1\\z", pattern), _re2_options(False))
    except re2.error:
        return True
    return False


def backtracking_patterns(node: Node) -> list[str]:
    """The regex patterns of ``node`` that RE2 cannot run (for ``rules validate``)."""
    if isinstance(node, Cmp):
        if node.op != "regex":
            return []
        return [as_str(v) for v in node.values if needs_backtracking(as_str(v))]
    if isinstance(node, And | Or):
        return [p for item in node.items for p in backtracking_patterns(item)]
    if isinstance(node, Not):
        return backtracking_patterns(node.item)
    return []


def _getter(field: Field) -> Callable[[dict[str, Any]], Any]:
    names = (field.name, *field.fallbacks)
    index = field.index

    def get(ev: dict[str, Any]) -> Any:
        for name in names:
            v = ev.get(name)
            if v is not None:
                break
        if index is not None:
            if isinstance(v, list | tuple) and len(v) > index:
                return v[index]
            return None
        return v

    return get


def equality_set(values: tuple[Any, ...], nocase: bool) -> frozenset[Any]:
    """Each literal plus its other spelling ("443" and 443, "true" and True).

    Cached: a bundle repeats the same lists (Sigma tuning adds one exception list to every
    Sigma rule), and the set is immutable.
    """
    # Typed key: 1, 1.0 and True are equal as keys but have different other spellings.
    key = (nocase, tuple((v.__class__, v) for v in values))
    try:
        hit = _EQ_CACHE.get(key)
    except TypeError:  # an unhashable literal: not cacheable
        return _equality_set(values, nocase)
    if hit is None:
        if len(_EQ_CACHE) >= 4096:
            _EQ_CACHE.clear()
        hit = _EQ_CACHE[key] = _equality_set(values, nocase)
    return hit


def _equality_set(values: tuple[Any, ...], nocase: bool) -> frozenset[Any]:
    out: set[Any] = set()
    for v in values:
        if isinstance(v, str):
            out.add(v.lower() if nocase else v)
            low = v.lower()
            if low in _TRUTH:
                out.add(_TRUTH[low])
            else:
                try:
                    out.add(int(v))
                except ValueError:
                    with contextlib.suppress(ValueError):
                        out.add(float(v))
        elif isinstance(v, bool):
            out.update((v, str(v).lower()))
        else:
            out.update((v, str(v)))
    return frozenset(out)


_EQ_CACHE: dict[Any, frozenset[Any]] = {}


def as_str(x: Any) -> str:
    if x.__class__ is str:
        return x
    if isinstance(x, bool):
        return "true" if x else "false"
    return str(x)


_IP_CACHE: dict[str, tuple[int, int] | None] = {}
_IP_CACHE_MAX = 16_384


def parse_ip(text: str) -> tuple[int, int] | None:
    """``(version, integer)`` of an IP address, None when ``text`` is none; cached (a fleet
    talks to the same addresses again and again, and ipaddress parses in Python)."""
    hit = _IP_CACHE.get(text, False)
    if hit is False:
        try:
            addr = ipaddress.ip_address(text)
            hit = (addr.version, int(addr))
        except ValueError:
            hit = None
        if len(_IP_CACHE) >= _IP_CACHE_MAX:
            _IP_CACHE.clear()
        _IP_CACHE[text] = hit
    return hit  # type: ignore[return-value]


def _value_test(node: Cmp) -> Callable[[Any], bool]:
    op, values, nocase = node.op, node.values, node.nocase
    if not values:
        raise QueryError(f"{op} on {node.field} has no values")
    if op == "=":
        s = equality_set(values, nocase)
        if nocase:
            return lambda x: (x.lower() if x.__class__ is str else x) in s
        return lambda x: x.__hash__ is not None and x in s
    if op in ("<", "<=", ">", ">="):
        limit = float(values[0])
        cmp = {"<": float.__lt__, "<=": float.__le__, ">": float.__gt__, ">=": float.__ge__}[op]

        def num(x: Any) -> bool:
            try:
                return cmp(float(x), limit)
            except (TypeError, ValueError):
                return False

        return num
    strs = tuple(as_str(v).lower() if nocase else as_str(v) for v in values)
    if nocase:
        def fold(x: Any) -> str:
            return x.lower() if x.__class__ is str else as_str(x).lower()
    else:
        def fold(x: Any) -> str:
            return x if x.__class__ is str else as_str(x)
    if op == "contains":
        if len(strs) == 1:
            needle = strs[0]
            if nocase:
                return lambda x: needle in (x.lower() if x.__class__ is str else fold(x))
            return lambda x: needle in (x if x.__class__ is str else fold(x))

        if len(strs) <= 3:
            def any_in(x: Any) -> bool:
                sx = fold(x)
                return any(n in sx for n in strs)

            return any_in
        # Many needles: one regex alternation scans the string once, in C.
        search = re.compile("|".join(map(re.escape, strs))).search
        return lambda x: search(fold(x)) is not None
    if op == "startswith":
        return lambda x: fold(x).startswith(strs)
    if op == "endswith":
        return lambda x: fold(x).endswith(strs)
    if op in ("glob", "regex"):
        raw = tuple(as_str(v) for v in values)
        try:
            search = _pattern_search(op, raw, nocase)
        except re.error as exc:
            raise QueryError(f"bad {op} {raw!r}: {exc}") from None
        return lambda x: search(as_str(x)) is not None
    if op == "cidr":
        try:
            nets = tuple((n.version, int(n.network_address), int(n.netmask))
                         for n in (ipaddress.ip_network(s, strict=False) for s in strs))
        except ValueError as exc:
            raise QueryError(f"bad cidr: {exc}") from None

        def in_net(x: Any) -> bool:  # ``ip_address(x) in ip_network(s)``, on integers
            ip = parse_ip(as_str(x))
            if ip is None:
                return False
            version, value = ip
            return any(v == version and value & mask == net for v, net, mask in nets)

        return in_net
    raise QueryError(f"unknown operator {op!r}")


def _pattern_search(op: str, raw: tuple[str, ...], nocase: bool) -> Callable[[str], Any]:
    """The search (regex) or whole-text match (glob) of ``raw``'s alternatives: a match or
    None. Raises re.error on a bad pattern.

    A case-insensitive pattern that starts with neither a literal nor an anchor
    (``(falcon|osquery|...)[^\\n]*(...)``) makes ``re`` try it at every position of the
    text without its first-character shortcut: several microseconds on a command line, for
    rules whose other tests passed. When every match must contain one of a few literals
    (:func:`required_literals`, the rule index's own prefilter), one Aho-Corasick pass over
    the lower-cased text rules most texts out first; non-ASCII text always goes to the
    pattern (Unicode case folding differs from ASCII's). Other patterns are about as fast
    as the prefilter itself (measured: 0.1-0.2 us) and run as they are."""
    flags = re.IGNORECASE | re.DOTALL if nocase else re.DOTALL
    if op == "glob":
        pattern = "|".join(f"(?:{fnmatch.translate(v)})" for v in raw)
        search = re.compile(pattern, flags).match
    else:
        pattern = "|".join(f"(?:{v})" for v in raw)
        search = regex_search(pattern, nocase)
    needles = required_literals(pattern, flags)
    if not needles or not nocase or not _no_fixed_start(pattern, flags):
        return search
    automaton = _needle_automaton(needles)

    def prefiltered(text: str) -> Any:
        if text.isascii() and next(automaton.iter(text.lower()), None) is None:
            return None
        return search(text)

    return prefiltered


def _no_fixed_start(pattern: str, flags: int) -> bool:
    """Whether ``pattern`` begins with something other than a literal character or an
    anchor (``^``, ``\\A``: ``re`` then tries one position only)."""
    try:
        parsed = _re_parser.parse(pattern, flags)
    except (re.error, RecursionError, OverflowError):
        return False
    items = list(parsed)
    while items and items[0][0] is _re_constants.SUBPATTERN and len(items) == 1:
        items = list(items[0][1][-1])  # the alternation's own group: look inside
    return bool(items) and items[0][0] not in (_re_constants.LITERAL, _re_constants.AT)


_AUTOMATA: dict[frozenset[str], Any] = {}


def _needle_automaton(needles: frozenset[str]) -> Any:
    """An Aho-Corasick automaton of ``needles``, shared by the conditions that need it."""
    automaton = _AUTOMATA.get(needles)
    if automaton is None:
        import ahocorasick  # noqa: PLC0415 - a hub package; `threatseer fields` and the
        # query parser also run on sensor-only installs, which lack it
        if len(_AUTOMATA) >= 4096:
            _AUTOMATA.clear()
        automaton = _AUTOMATA[needles] = ahocorasick.Automaton()
        for n in needles:
            automaton.add_word(n, n)
        automaton.make_automaton()
    return automaton


# Predicates for the common operators with the test on a ``str`` value written inline (most
# fields are strings): one Python call per comparison instead of two. ``k`` is the operator's
# precomputed constant; anything but a str takes the generic path through ``test``.
_FAST_EXPRS = {
    "eq": "v in {k}", "ieq": "v.lower() in {k}",
    "contains": "{k} in v", "icontains": "{k} in v.lower()",
    # Two or three needles, each tested in turn as _value_test does: written out, not
    # any(map(...)) (a bound method, a map and a call to any for each evaluation).
    "contains_any2": "({k}[0] in v or {k}[1] in v)",
    "contains_any3": "({k}[0] in v or {k}[1] in v or {k}[2] in v)",
    "icontains_any2": "({k}[0] in (w := v.lower()) or {k}[1] in w)",
    "icontains_any3": "({k}[0] in (w := v.lower()) or {k}[1] in w or {k}[2] in w)",
    "contains_rx": "{k}(v) is not None", "icontains_rx": "{k}(v.lower()) is not None",
    "startswith": "v.startswith({k})", "istartswith": "v.lower().startswith({k})",
    "endswith": "v.endswith({k})", "iendswith": "v.lower().endswith({k})",
    "search": "{k}(v) is not None",
}


def _eq_any(values: frozenset[Any], items: list[Any]) -> bool:
    """Whether an item of the list ``items`` is in ``values``: one C loop (a list field such
    as ``threatseer.ancestors`` against a list macro), not a call per item; an unhashable
    item equals nothing, as in the per-item test."""
    try:
        return not values.isdisjoint(items)
    except TypeError:
        return any(x.__hash__ is not None and x in values for x in items)


def _fast_leaf(kind: str, name: str, k: str, test: str) -> str:
    """The expression of a fast comparison: field ``name``'s str value tested inline, None
    false, a list true when any item passes ``test`` (set equality: :func:`_eq_any`),
    anything else ``test(v)``. ``name``, ``k`` and ``test`` are names of values, never rule
    text."""
    inline = _FAST_EXPRS[kind].format(k=k)
    on_list = f"_eq_any({k}, v)" if kind == "eq" else f"_any(_map({test}, v))"
    return (f"(({inline}) if (v := ev.get({name})).__class__ is str else (False if v is None "
            f"else ({on_list} if v.__class__ is list else {test}(v))))")


def _element_leaf(kind: str, name: str, index: str, k: str, test: str) -> str:
    """:func:`_fast_leaf` on element ``index`` of list field ``name``
    (``threatseer.ancestors[1]``), inline too: absent, not a list or too short is false.
    All four are names of values."""
    inline = _FAST_EXPRS[kind].format(k=k)
    on_list = f"_eq_any({k}, v)" if kind == "eq" else f"_any(_map({test}, v))"
    return (f"(False if not (isinstance(v := ev.get({name}), _LT) and len(v) > {index}) "
            f"or (v := v[{index}]) is None else (({inline}) if v.__class__ is str else "
            f"({on_list} if v.__class__ is list else {test}(v))))")


def _fast_factory(kind: str) -> Callable[[str, Callable[[Any], bool], Any], Predicate]:
    source = (f"def factory(name, test, k):\n    def pred(ev):\n"
              f"        return {_fast_leaf(kind, 'name', 'k', 'test')}\n    return pred\n")
    namespace: dict[str, Any] = {"_any": any, "_map": map, "_eq_any": _eq_any}
    exec(source, namespace)  # noqa: S102 - fixed forms above
    return namespace["factory"]


_FAST_FACTORIES = {kind: _fast_factory(kind) for kind in _FAST_EXPRS}


def _str_fast(node: Cmp) -> tuple[str, Any] | None:
    """(kind, constant) of an inline str test equal to ``_value_test(node)`` on a str."""
    op, values, nocase = node.op, node.values, node.nocase
    prefix = "i" if nocase else ""
    if op == "=":
        return prefix + "eq", equality_set(values, nocase)
    strs = tuple(as_str(v).lower() if nocase else as_str(v) for v in values)
    if op == "contains" and len(strs) == 1:
        return prefix + "contains", strs[0]
    if op == "contains" and len(strs) <= 3:  # as _value_test: each needle in turn
        return f"{prefix}contains_any{len(strs)}", strs
    if op == "contains":  # as _value_test: one alternation of the escaped needles
        return prefix + "contains_rx", re.compile("|".join(map(re.escape, strs))).search
    if op in ("startswith", "endswith"):
        return prefix + op, strs
    if op in ("regex", "glob"):
        return "search", _pattern_search(op, tuple(as_str(v) for v in values), nocase)
    return None


def _compile_cmp(node: Cmp) -> Predicate:
    field = node.field
    simple = field.index is None and not field.fallbacks
    name = field.name
    if node.op == "exists":
        if simple:
            return lambda ev: ev.get(name) is not None
        get = _getter(field)
        return lambda ev: get(ev) is not None
    test = _value_test(node)
    fast = _str_fast(node) if simple else None
    if fast is not None:
        return _FAST_FACTORIES[fast[0]](name, test, fast[1])
    if simple:
        def pred(ev: dict[str, Any]) -> bool:
            v = ev.get(name)
            if v is None:
                return False
            if v.__class__ is list:
                return any(map(test, v))
            return test(v)
        return pred
    get = _getter(field)

    def pred_get(ev: dict[str, Any]) -> bool:
        v = get(ev)
        if v is None:
            return False
        if v.__class__ is list:
            return any(map(test, v))
        return test(v)

    return pred_get


def _and(a: Predicate, b: Predicate) -> Predicate:
    return lambda ev: a(ev) and b(ev)


def _or(a: Predicate, b: Predicate) -> Predicate:
    return lambda ev: a(ev) or b(ev)


def _flat_or(node: Node) -> list[Node]:
    return [x for i in node.items for x in _flat_or(i)] if isinstance(node, Or) else [node]


def merge_equalities(node: Node) -> Node:
    """``node`` with the equality tests of an ``or`` on one plain field merged into one test
    of the union of their values (``process.name in package_managers or process.name in
    config_managers``, as macros write it: one dict read and one set lookup instead of two).

    Exact: ``x = a or x = b`` is ``x in (a, b)`` for every value (a list field: any item in
    either set), and the tests are pure, so moving one into the other's place in the ``or``
    changes no result. Other tests keep their place."""
    if isinstance(node, Or):
        merged: list[Node] = []
        at: dict[tuple[str, bool], int] = {}
        for item in map(merge_equalities, _flat_or(node)):
            if (isinstance(item, Cmp) and item.op == "=" and item.field.index is None
                    and not item.field.fallbacks):
                key = (item.field.name, item.nocase)
                j = at.get(key)
                if j is not None:
                    prev = merged[j]
                    assert isinstance(prev, Cmp)
                    merged[j] = Cmp(prev.field, "=", prev.values + item.values, prev.nocase)
                    continue
                at[key] = len(merged)
            merged.append(item)
        return merged[0] if len(merged) == 1 else Or(tuple(merged))
    if isinstance(node, And):
        return And(tuple(map(merge_equalities, node.items)))
    if isinstance(node, Not):
        return Not(merge_equalities(node.item))
    return node


def compile_condition(node: Node) -> Predicate:
    """A predicate equivalent to ``node`` over flat ECS events.

    The whole condition becomes ONE generated function: ``and``/``or``/``not`` are Python's
    operators, and comparisons on a plain field with an inline form (:data:`_FAST_EXPRS`)
    are written inline too; other comparisons are calls to their closure. A condition of ten
    comparisons was ten to twenty nested calls, most of the dynamic engine's evaluation time.
    A condition too deep for Python's compiler falls back to nested closures.
    """
    node = merge_equalities(node)
    gen = _Generator()
    try:
        expr = gen.expr(node)
        source = f"def pred(ev):\n    return {expr}\n"
        code = _CODE.get(source)
        if code is None:  # conditions of one shape share their source: compile it once
            if len(_CODE) >= 4096:
                _CODE.clear()
            code = _CODE[source] = compile(source, "<condition>", "exec")
        namespace: dict[str, Any] = dict(gen.names)
        exec(code, namespace)  # noqa: S102 - see _Generator
    except (SyntaxError, RecursionError, MemoryError):
        return _closures(node)
    return namespace["pred"]


_CODE: dict[str, Any] = {}


class _Generator:
    """The source of one condition's expression. Every value (field names, constants, tests)
    is passed by name in ``names``; the source holds only those names, operators and the
    fixed forms of :data:`_FAST_EXPRS`, so no rule text ever becomes code."""

    def __init__(self) -> None:
        self.names: dict[str, Any] = {"_any": any, "_map": map, "_eq_any": _eq_any,
                                      "_LT": (list, tuple)}

    def _name(self, prefix: str, value: Any) -> str:
        name = f"{prefix}{len(self.names)}"
        self.names[name] = value
        return name

    def expr(self, node: Node) -> str:
        if isinstance(node, And | Or):
            op = " and " if isinstance(node, And) else " or "
            return "(" + op.join(self.expr(i) for i in node.items) + ")"
        if isinstance(node, Not):
            return f"(not {self.expr(node.item)})"
        if isinstance(node, Const):
            return self._name("C", node.value)
        if isinstance(node, Cmp):
            return self._cmp(node)
        raise QueryError(f"cannot compile {node!r}")

    def _cmp(self, node: Cmp) -> str:
        field = node.field
        if field.fallbacks or (field.index is not None and (
                node.op == "exists" or not isinstance(field.index, int))):
            return f"{self._name('L', _compile_cmp(node))}(ev)"
        n = self._name("N", field.name)
        if field.index is not None:
            test = _value_test(node)
            fast = _str_fast(node)
            if fast is None:
                return f"{self._name('L', _compile_cmp(node))}(ev)"
            return _element_leaf(fast[0], n, self._name("I", field.index),
                                 self._name("K", fast[1]), self._name("T", test))
        if node.op == "exists":
            return f"(ev.get({n}) is not None)"
        test = _value_test(node)  # first: it raises QueryError on bad values
        fast = _str_fast(node)
        if fast is None:
            return f"{self._name('L', _compile_cmp(node))}(ev)"
        return _fast_leaf(fast[0], n, self._name("K", fast[1]), self._name("T", test))


def _closures(node: Node) -> Predicate:
    """``node`` as nested closures (for conditions too deep to generate)."""
    if isinstance(node, Cmp):
        return _compile_cmp(node)
    if isinstance(node, And | Or):
        # Fold into nested two-way closures: cheaper per call than all()/any() over a
        # generator, and short-circuits the same way.
        parts = [_closures(i) for i in node.items]
        acc = parts[-1]
        for p in reversed(parts[:-1]):
            acc = _and(p, acc) if isinstance(node, And) else _or(p, acc)
        return acc
    if isinstance(node, Not):
        inner = _closures(node.item)
        return lambda ev: not inner(ev)
    if isinstance(node, Const):
        value = node.value
        return lambda ev: value
    raise QueryError(f"cannot compile {node!r}")
