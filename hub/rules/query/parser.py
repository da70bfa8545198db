"""Recursive-descent parser: condition text -> AST.

Grammar (``not`` binds tighter than ``and``, which binds tighter than ``or``)::

    expr   := term ("or" term)*
    term   := factor ("and" factor)*
    factor := "not" factor | "(" expr ")" | "true" | "false" | MACRO | comparison
    comparison := FIELD ["not"] OP values | FIELD "exists"
    OP     := = != < <= > >= in contains startswith endswith glob regex cidr
              icontains istartswith iendswith iglob iregex ieq
    values := value | "(" value ("," value)* ")" | LISTNAME

A bare word naming a list stands for its values (after ``in`` it must name one).

A rule's whole condition may instead be a sequence (EQL's ``sequence``, or ``sample`` for the
same steps in any order; evaluated by the hub with bounded state, see
``threatseer.hub.rules.sequence``)::

    sequence := ("sequence" | "sample") ["by" FIELD ("," FIELD)*] "within" DURATION step step*
    step     := "[" expr "]" ["by" FIELD ("," FIELD)*]
                ["with" "runs" "=" N ["," "distinct" "=" FIELD]]
    DURATION := a number with a unit: 500ms, 30s, 5m, 1h

A sequence of one step with ``runs`` counts repetitions (``[outbound] with runs=20,
distinct=destination.port``).

Ancestry: ``process.ancestors`` is ``threatseer.ancestors`` (nearest first) and
``process.ancestors[N]`` one of them; ``process.parent.*`` are plain fields.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from collections.abc import Sequence as Sequence_
from typing import Any

from threatseer.hub.rules.query.ast import (
    Cmp,
    Const,
    Field,
    Node,
    Not,
    Sequence,
    Step,
    conj,
    disj,
)
from threatseer.hub.rules.query.errors import QueryError
from threatseer.hub.rules.query.lexer import Token, tokenize

KEYWORDS = frozenset({"and", "or", "not", "true", "false"})
# Operator keyword -> (AST op, nocase)
WORD_OPS: dict[str, tuple[str, bool]] = {
    "in": ("=", False), "contains": ("contains", False), "startswith": ("startswith", False),
    "endswith": ("endswith", False), "glob": ("glob", False), "regex": ("regex", False),
    "cidr": ("cidr", False), "icontains": ("contains", True),
    "istartswith": ("startswith", True), "iendswith": ("endswith", True),
    "iglob": ("glob", True), "iregex": ("regex", True), "ieq": ("=", True),
    "exists": ("exists", False),
}
ALIASES = {"process.ancestors": "threatseer.ancestors"}
_INDEXED = re.compile(r"([A-Za-z_@][\w.@-]*)\[(\d+)\]\Z")
_FIELD = re.compile(r"[A-Za-z_@][\w.@-]*\Z")
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)\Z")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
MAX_WITHIN_S = 3600.0  # state is kept this long at most
MAX_STEPS = 16
MAX_RUNS = 1000

MacroResolver = Callable[[str], "Node | None"]


def parse_field(text: str, column: int | None = None) -> Field:
    m = _INDEXED.match(text)
    if m:
        name, index = m.group(1), int(m.group(2))
    elif _FIELD.match(text):
        name, index = text, None
    else:
        raise QueryError(f"not a field name: {text!r}", column)
    return Field(ALIASES.get(name, name), index)


class _Parser:
    def __init__(
        self, text: str, macros: MacroResolver, lists: Mapping[str, Sequence_[Any]]
    ) -> None:
        self.tokens = tokenize(text)
        self.pos = 0
        self.macros = macros
        self.lists = lists

    def peek(self, ahead: int = 0) -> Token:
        return self.tokens[min(self.pos + ahead, len(self.tokens) - 1)]

    def next(self) -> Token:
        tok = self.tokens[self.pos]
        self.pos = min(self.pos + 1, len(self.tokens) - 1)
        return tok

    def is_word(self, word: str, ahead: int = 0) -> bool:
        tok = self.peek(ahead)
        return tok.kind == "word" and tok.text.lower() == word

    def expect_punct(self, p: str) -> None:
        tok = self.next()
        if tok.kind != "punct" or tok.text != p:
            raise QueryError(f"expected {p!r}, found {tok.text or 'end of condition'!r}",
                             tok.column)

    def parse(self) -> Node:
        node = self.expr()
        tok = self.peek()
        if tok.kind != "end":
            raise QueryError(f"unexpected {tok.text!r} (missing and/or?)", tok.column)
        return node

    def expr(self) -> Node:
        items = [self.term()]
        while self.is_word("or"):
            self.next()
            items.append(self.term())
        return disj(*items)

    def term(self) -> Node:
        items = [self.factor()]
        while self.is_word("and"):
            self.next()
            items.append(self.factor())
        return conj(*items)

    def factor(self) -> Node:
        tok = self.peek()
        if tok.kind == "punct" and tok.text == "(":
            self.next()
            node = self.expr()
            self.expect_punct(")")
            return node
        if tok.kind != "word":
            raise QueryError(f"expected a field, macro or '(', found {tok.text or 'end'!r}",
                             tok.column)
        low = tok.text.lower()
        if low == "not":
            self.next()
            return Not(self.factor())
        if low in ("true", "false"):
            self.next()
            return Const(low == "true")
        if low in ("and", "or"):
            raise QueryError(f"unexpected {tok.text!r}", tok.column)
        self.next()
        nxt = self.peek()
        has_op = nxt.kind == "op" or (
            nxt.kind == "word" and (nxt.text.lower() in WORD_OPS or (
                nxt.text.lower() == "not" and self.peek(1).kind in ("op", "word")
                and self.peek(1).text.lower() in WORD_OPS)))
        if not has_op:
            macro = self.macros(tok.text)
            if macro is None:
                raise QueryError(
                    f"unknown macro {tok.text!r} (or a field without an operator)", tok.column)
            return macro
        return self.comparison(parse_field(tok.text, tok.column))

    def comparison(self, field: Field) -> Node:
        negate = False
        if self.is_word("not"):
            self.next()
            negate = True
        tok = self.next()
        if tok.kind == "op":
            op, nocase = {"!=": ("=", False)}.get(tok.value, (tok.value, False))  # type: ignore[arg-type]
            if tok.value == "!=":
                negate = not negate
        else:
            op, nocase = WORD_OPS[tok.text.lower()]
        if op == "exists":
            node: Node = Cmp(field, "exists")
        else:
            values = self.values(tok.text.lower() == "in")
            if op in ("<", "<=", ">", ">=") and (
                len(values) != 1 or not isinstance(values[0], int | float)
            ):
                raise QueryError(f"{tok.text} needs one number", tok.column)
            node = Cmp(field, op, values, nocase)
        return Not(node) if negate else node

    def values(self, allow_list_name: bool) -> tuple[Any, ...]:
        tok = self.next()
        if tok.kind == "punct" and tok.text == "(":
            out: list[Any] = []
            while True:
                item = self.next()
                if item.kind == "word" and item.text in self.lists:
                    out.extend(self.lists[item.text])  # a named list inside a literal list
                elif item.kind in ("string", "number", "word"):
                    out.append(item.value)
                else:
                    raise QueryError(f"expected a value, found {item.text or 'end'!r}",
                                     item.column)
                sep = self.next()
                if sep.kind == "punct" and sep.text == ")":
                    return tuple(out)
                if not (sep.kind == "punct" and sep.text == ","):
                    raise QueryError(f"expected ',' or ')', found {sep.text or 'end'!r}",
                                     sep.column)
        if tok.kind == "word" and tok.text in self.lists:
            return tuple(self.lists[tok.text])
        if tok.kind == "word" and allow_list_name:
            raise QueryError(f"unknown list {tok.text!r}", tok.column)
        if tok.kind in ("string", "number", "word"):
            return (tok.value,)
        raise QueryError(f"expected a value, found {tok.text or 'end of condition'!r}",
                         tok.column)


def _split_steps(text: str) -> tuple[str, list[tuple[str, str, int]]]:
    """``(header, [(step body, text after it, column), ...])`` of a sequence's text: a step
    is a top-level ``[...]`` not right after a word character (that is a field index, as
    ``process.ancestors[0]``); brackets inside quotes or nested ones do not count."""
    header_end = None
    steps: list[tuple[str, str, int]] = []
    i, n, depth, start = 0, len(text), 0, -1
    last_end = 0
    quote = ""
    while i < n:
        c = text[i]
        if quote:
            if c == "\\":
                i += 2
                continue
            if c == quote:
                quote = ""
        elif c in "'\"":
            quote = c
        elif c == "[":
            if depth == 0 and (i == 0 or not (text[i - 1].isalnum() or text[i - 1] in "_.@-")):
                if header_end is None:
                    header_end = i
                elif steps:
                    body, _, col = steps[-1]
                    steps[-1] = (body, text[last_end:i], col)
                start = i
                depth = 1
            elif depth:
                depth += 1
        elif c == "]" and depth:
            depth -= 1
            if depth == 0:
                steps.append((text[start + 1:i], "", start + 2))
                last_end = i + 1
        i += 1
    if quote or depth:
        raise QueryError("unbalanced [ ] or quotes in the sequence")
    if steps:
        body, _, col = steps[-1]
        steps[-1] = (body, text[last_end:], col)
    return text[:header_end] if header_end is not None else text, steps


class _Words:
    """A small token reader for a sequence's header and the text after each step."""

    def __init__(self, text: str, column: int = 0) -> None:
        self.tokens = tokenize(text)
        self.pos = 0
        self.column = column

    def peek(self) -> Token:
        return self.tokens[self.pos]

    def next(self) -> Token:
        tok = self.tokens[self.pos]
        self.pos = min(self.pos + 1, len(self.tokens) - 1)
        return tok

    def is_word(self, word: str) -> bool:
        tok = self.peek()
        return tok.kind == "word" and tok.text.lower() == word

    def error(self, message: str, tok: Token | None = None) -> QueryError:
        return QueryError(message, (tok.column + self.column) if tok else None)

    def fields(self) -> tuple[Field, ...]:
        out = []
        while True:
            tok = self.next()
            if tok.kind != "word":
                raise self.error(f"expected a field, found {tok.text or 'end'!r}", tok)
            out.append(parse_field(tok.text, tok.column))
            if not (self.peek().kind == "punct" and self.peek().text == ","):
                return tuple(out)
            self.next()

    def setting(self, name: str) -> Token:
        tok = self.next()
        if tok.kind != "word" or tok.text.lower() != name:
            raise self.error(f"expected {name}=, found {tok.text or 'end'!r}", tok)
        eq = self.next()
        if eq.kind != "op" or eq.value != "=":
            raise self.error(f"expected '=' after {name}", eq)
        return self.next()

    def end(self, what: str) -> None:
        tok = self.peek()
        if tok.kind != "end":
            raise self.error(f"unexpected {tok.text!r} {what}", tok)


def _sequence(text: str, macros: MacroResolver, lists: Mapping[str, Sequence_[Any]]
              ) -> Sequence:
    header, parts = _split_steps(text)
    head = _Words(header)
    ordered = head.next().text.lower() == "sequence"  # or "sample": any order
    by: tuple[Field, ...] = ()
    if head.is_word("by"):
        head.next()
        by = head.fields()
    if not head.is_word("within"):
        raise head.error("a sequence needs 'within DURATION' (e.g. within 60s)", head.peek())
    head.next()
    tok = head.next()
    m = _DURATION.match(tok.text) if tok.kind in ("word", "number") else None
    if m is None:
        raise head.error("expected a duration like 500ms, 30s, 5m, 1h; found "
                         f"{tok.text or 'end'!r}", tok)
    within = float(m.group(1)) * _UNITS[m.group(2)]
    if not 0 < within <= MAX_WITHIN_S:
        raise head.error(f"within must be more than 0 and at most {MAX_WITHIN_S:.0f}s", tok)
    head.end("before the first [step]")
    if not parts:
        raise QueryError("a sequence needs at least one [step]")
    if len(parts) > MAX_STEPS:
        raise QueryError(f"a sequence has at most {MAX_STEPS} steps")
    steps = []
    for body, after, column in parts:
        try:
            condition = _Parser(body, macros, lists).parse()
        except QueryError as exc:
            col = exc.column + column - 1 if exc.column else None
            raise QueryError(f"in step {len(steps) + 1}: {exc.message}", col) from None
        steps.append(_step(condition, _Words(after, column + len(body)), by))
    if len(steps) == 1 and steps[0].runs == 1:
        raise QueryError("a sequence of one step needs 'with runs=N' (N > 1)")
    return Sequence(by, within, tuple(steps), ordered)


def _step(condition: Node, rest: _Words, default_by: tuple[Field, ...]) -> Step:
    by = default_by
    if rest.is_word("by"):
        rest.next()
        by = rest.fields()
        if default_by and len(by) != len(default_by):
            raise rest.error(f"a step joins on {len(by)} fields, the sequence on "
                             f"{len(default_by)}")
    if not by:
        raise rest.error("each step needs join fields: 'sequence by F' or '[...] by F'")
    runs, distinct = 1, None
    if rest.is_word("with"):
        rest.next()
        tok = rest.setting("runs")
        if tok.kind != "number" or not isinstance(tok.value, int) or not (
                2 <= tok.value <= MAX_RUNS):
            raise rest.error(f"runs must be a whole number from 2 to {MAX_RUNS}", tok)
        runs = tok.value
        if rest.peek().kind == "punct" and rest.peek().text == ",":
            rest.next()
            tok = rest.setting("distinct")
            if tok.kind != "word":
                raise rest.error("distinct= needs a field", tok)
            distinct = parse_field(tok.text, tok.column)
    rest.end("after a step")
    return Step(condition, by, runs, distinct)


def parse_rule_condition(
    text: str,
    macros: Mapping[str, Node] | MacroResolver | None = None,
    lists: Mapping[str, Sequence_[Any]] | None = None,
) -> Node | Sequence:
    """A rule's condition: an expression, or a ``sequence`` of them."""
    if isinstance(text, str) and text.strip().split(None, 1)[0:1] and \
            text.strip().split(None, 1)[0].lower() in ("sequence", "sample"):
        return _sequence(text.strip(), _resolver(macros), lists or {})
    return parse(text, macros, lists)


def _resolver(macros: Mapping[str, Node] | MacroResolver | None) -> MacroResolver:
    if macros is None:
        return lambda name: None
    if callable(macros):
        return macros
    return macros.get


def parse(
    text: str,
    macros: Mapping[str, Node] | MacroResolver | None = None,
    lists: Mapping[str, Sequence_[Any]] | None = None,
) -> Node:
    """Parse ``text``; macros are AST nodes (or a resolver), lists are value sequences."""
    if not isinstance(text, str) or not text.strip():
        raise QueryError("empty condition")
    return _Parser(text, _resolver(macros), lists or {}).parse()
