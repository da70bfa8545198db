"""Normalise command lines to a "shape", so a profile records kinds of invocation, not values.

``sleep 5`` and ``sleep 300`` are the same behaviour; so are two runs of a job writing to
``/tmp/tmp.Xa81bQ`` and ``/tmp/tmp.93kzPq``. Without masking, a profile would grow with every
pid, port, timestamp and temp file and never stop seeing "new" behaviour.

The masks are defined here; ``argv_shape`` (an argv to its line, masked once per distinct
line) is part of the profile engine's native loop, ``threatseer.hub.engines._profile``.
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


def mask(text: str) -> str:
    """``text`` with numbers, hex, UUIDs and temp paths replaced by placeholders."""
    for pattern, placeholder in _MASKS:
        text = pattern.sub(placeholder, text)
    return text
