"""Literal text a regex cannot match without: lets the rule index prefilter regex and glob rules.

``required_literals(r"history\\s+-c|unset\\s+HISTFILE")`` is ``{"history", "histfile"}``:
every match contains one of them. The index looks for these needles (lower-cased) in the
event's lower-cased text with one Aho-Corasick pass, and runs the rule's closure only when one
occurs. Needles are ASCII only, and the index falls back to "maybe" on non-ASCII text, so Unicode
case folding (``ſ`` matching ``s`` under IGNORECASE) can never hide a match.
"""

from __future__ import annotations

import re
from typing import Any

try:  # Python >= 3.11
    from re import _constants as _c
    from re import _parser as _p
except ImportError:  # pragma: no cover - Python 3.10
    import sre_constants as _c  # type: ignore[no-redef]
    import sre_parse as _p  # type: ignore[no-redef]

_REPEATS = {_c.MAX_REPEAT, _c.MIN_REPEAT, getattr(_c, "POSSESSIVE_REPEAT", _c.MAX_REPEAT)}
_ZERO_WIDTH = {_c.AT, _c.ASSERT, _c.ASSERT_NOT}
_ATOMIC = getattr(_c, "ATOMIC_GROUP", None)
# Shorter needles hit almost every event: not worth indexing.
MIN_NEEDLE = 2
MAX_FIXED = 32  # alternatives kept for one run of fixed text (``-(W|R)`` is "-W" or "-R")


def _best(options: list[frozenset[str]]) -> frozenset[str] | None:
    """The most selective requirement: longest shortest needle, then fewest needles."""
    if not options:
        return None
    return max(options, key=lambda s: (min(map(len, s)), -len(s)))


def _fixed(op: Any, arg: Any) -> list[str] | None:
    """The strings an item can match when they are few and fixed (``x``, ``[Ww]``, ``(a|bc)``)."""
    if op is _c.LITERAL:
        return [chr(arg)]
    if op in _ZERO_WIDTH:
        return [""]
    if op is _c.IN:
        if all(o is _c.LITERAL for o, _ in arg):
            return [chr(a) for _, a in arg]
        return None
    if op is _c.SUBPATTERN:
        return _fixed_seq(arg[-1])
    if op is _c.BRANCH:
        out: list[str] = []
        for alt in arg[1]:
            strs = _fixed_seq(alt)
            if strs is None:
                return None
            out += strs
        return out if len(out) <= MAX_FIXED else None
    return None


def _fixed_seq(items: Any) -> list[str] | None:
    out = [""]
    for op, arg in items:
        strs = _fixed(op, arg)
        if strs is None or len(out) * len(strs) > MAX_FIXED:
            return None
        out = [a + b for a in out for b in strs]
    return out


def _seq(items: Any) -> frozenset[str] | None:
    options: list[frozenset[str]] = []
    run = [""]  # the text matched since the last non-fixed item: one of these strings

    def close_run() -> None:
        if run != [""]:
            options.append(frozenset(run))
        run[:] = [""]

    for op, arg in items:
        strs = _fixed(op, arg)
        if strs is not None:
            if len(run) * len(strs) > MAX_FIXED:
                close_run()
            run[:] = [a + b for a in run for b in strs]
            continue
        close_run()
        sub: frozenset[str] | None = None
        if op is _c.SUBPATTERN:
            sub = _seq(arg[-1])
        elif _ATOMIC is not None and op is _ATOMIC:
            sub = _seq(arg)
        elif op in _REPEATS and arg[0] >= 1:
            sub = _seq(arg[2])
        elif op is _c.BRANCH:
            alts = [_seq(a) for a in arg[1]]
            if alts and all(a is not None for a in alts):
                sub = frozenset().union(*alts)  # type: ignore[arg-type]
        if sub is not None:
            options.append(sub)
    close_run()
    return _best([o for o in options if all(len(n) >= MIN_NEEDLE for n in o)])


def required_literals(pattern: str, flags: int = 0) -> frozenset[str] | None:
    """Lower-cased ASCII strings one of which every match of ``pattern`` contains, or None."""
    try:
        parsed = _p.parse(pattern, flags)
    except (re.error, RecursionError, OverflowError):
        return None
    found = _seq(parsed)
    if found is None or not all(n.isascii() for n in found):
        return None
    return frozenset(n.lower() for n in found)
