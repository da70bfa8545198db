"""Normalise command lines to a "shape", so a profile records kinds of invocation, not values.

``sleep 5`` and ``sleep 300`` are the same behaviour; so are two runs of a job writing to
``/tmp/tmp.Xa81bQ`` and ``/tmp/tmp.93kzPq``. Without masking, a profile would grow with every
pid, port, timestamp and temp file and never stop seeing "new" behaviour.
"""

from __future__ import annotations

import re

# Order matters: whole-token forms first, then the digits that remain inside tokens.
_MASKS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"(?:/tmp|/var/tmp|/dev/shm|/run/user/\d+)/\S*"), "<tmp>"),
    (re.compile(r"\b[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\b"),
     "<uuid>"),
    (re.compile(r"\b0[xX][0-9a-fA-F]+\b"), "<hex>"),
    (re.compile(r"\b(?=[0-9a-fA-F]*[0-9])(?=[0-9a-fA-F]*[a-fA-F])[0-9a-fA-F]{8,}\b"), "<hex>"),
    (re.compile(r"\d+"), "<n>"),
)

MAX_ARGS = 16  # argv beyond this is cut: its shape says enough
MAX_LEN = 512

_cache: dict[str, str] = {}
_CACHE_MAX = 50_000


def mask(text: str) -> str:
    """``text`` with numbers, hex, UUIDs and temp paths replaced by placeholders."""
    for pattern, placeholder in _MASKS:
        text = pattern.sub(placeholder, text)
    return text


def argv_shape(args: list[str] | tuple[str, ...] | str) -> str:
    """The shape of an argv (without argv[0], which the executable already names)."""
    if isinstance(args, str):
        line = args
    else:
        try:
            line = " ".join(args[1:MAX_ARGS + 1])  # argv is all strings but in odd input
        except TypeError:
            line = " ".join(str(a) for a in args[1:MAX_ARGS + 1])
    line = line[:MAX_LEN]
    shape = _cache.get(line)
    if shape is None:
        shape = mask(line)
        if len(_cache) >= _CACHE_MAX:
            _cache.clear()
        _cache[line] = shape
    return shape
