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

Ancestry: ``process.ancestors`` is ``threatseer.ancestors`` (nearest first) and
``process.ancestors[N]`` one of them; ``process.parent.*`` are plain fields.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from threatseer.hub.rules.query.ast import Cmp, Const, Field, Node, Not, conj, disj
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
        self, text: str, macros: MacroResolver, lists: Mapping[str, Sequence[Any]]
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


def parse(
    text: str,
    macros: Mapping[str, Node] | MacroResolver | None = None,
    lists: Mapping[str, Sequence[Any]] | None = None,
) -> Node:
    """Parse ``text``; macros are AST nodes (or a resolver), lists are value sequences."""
    if macros is None:
        resolver: MacroResolver = lambda name: None  # noqa: E731
    elif callable(macros):
        resolver = macros
    else:
        resolver = macros.get
    if not isinstance(text, str) or not text.strip():
        raise QueryError("empty condition")
    return _Parser(text, resolver, lists or {}).parse()
