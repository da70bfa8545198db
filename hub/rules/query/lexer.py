"""Tokens of the query language.

Bare words are deliberately loose (``/usr/bin/curl``, ``*.sh``, ``process.ancestors[0]``)
so most values need no quotes; quotes are needed only for spaces, parentheses, commas and
quote characters. Inside quotes a backslash escapes only the quote and itself, so regexes
like ``"\\d+"`` read naturally.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from threatseer.hub.rules.query.errors import QueryError

_TOKEN = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<punct>[(),])
  | (?P<op>==|!=|<=|>=|=|<|>)
  | (?P<string>"(?:\\.|[^"\\])*"|'(?:\\.|[^'\\])*')
  | (?P<word>[^\s(),'"=<>!]+)
    """,
    re.VERBOSE,
)
_NUMBER = re.compile(r"-?\d+(\.\d+)?\Z")


@dataclass(frozen=True, slots=True)
class Token:
    kind: str  # "punct", "op", "string", "number", "word", "end"
    text: str
    value: object
    column: int  # 1-based


def _unquote(text: str) -> str:
    quote, body = text[0], text[1:-1]
    return re.sub(r"\\([\\" + quote + "])", r"\1", body)


def tokenize(text: str) -> list[Token]:
    tokens: list[Token] = []
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            raise QueryError(f"unexpected character {text[pos]!r}", pos + 1)
        kind = m.lastgroup or ""
        raw = m.group()
        if kind == "string":
            tokens.append(Token("string", raw, _unquote(raw), pos + 1))
        elif kind == "word":
            if _NUMBER.match(raw):
                num: object = float(raw) if "." in raw else int(raw)
                tokens.append(Token("number", raw, num, pos + 1))
            else:
                tokens.append(Token("word", raw, raw, pos + 1))
        elif kind == "op":
            tokens.append(Token("op", raw, "=" if raw == "==" else raw, pos + 1))
        elif kind == "punct":
            tokens.append(Token("punct", raw, raw, pos + 1))
        pos = m.end()
    tokens.append(Token("end", "", None, len(text) + 1))
    return tokens
