"""The one schema check of events entering the hub, from sensors (ingest) or files (replay).

Each event must be a map with a string ``event.action``, every field the schema requires for
that action (:data:`threatseer.common.ecs.REQUIRED`), and a value of its schema type in every
field (:data:`threatseer.common.ecs.FIELDS`: the Elasticsearch type and whether it is a list):

============================  ================================================================
keyword, wildcard, date       a string, or an integer (ECS lets numbers arrive for keywords;
                              a date may be epoch milliseconds)
ip                            a string
long / unsigned_long          an integer in the 64-bit signed / unsigned range, not a boolean
float                         an integer or a finite number, not a boolean
boolean                       a boolean
``[]`` (array fields)         a list of those
============================  ================================================================

``None`` is a missing value and is allowed anywhere. Maps never are (no field of the schema
holds one; nesting is what :func:`threatseer.common.ecs.nest` makes of the dotted names).

An event that fails is refused whole and counted. In an event that passes, a string longer
than :attr:`Limits.max_chars` or a list longer than :attr:`Limits.max_items` is cut there and
named in ``threatseer.truncated_fields`` (so a 160 KB command line costs the rules what 8 KB
costs, and the analyst sees it was cut); a field the schema does not know is removed and
counted (``unknown-field``): an unknown name has no type to check, would give Elasticsearch a
mapping nobody chose, and is most likely a newer sensor than this hub (upgrade hubs first).
Fields the hub sets itself after the check (:data:`threatseer.common.ecs.HUB_FIELDS`) are not
checked: whatever a sensor put there is overwritten; those only the hub and its outputs write
(:data:`threatseer.common.ecs.HUB_ONLY`: rule.*, threat.*, message, ...) are removed.

The loop is in C (``_batch.refused``): it runs for every event the hub receives.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from threatseer.common import ecs
from threatseer.hub._batch import refused

# Type codes shared with hub/_batch.pyx (its cdef enum).
T_KEYWORD, T_LONG, T_ULONG, T_FLOAT, T_BOOL, T_DATE, T_IP, T_HUB, T_DROP = range(1, 10)
T_ARRAY = 16
_CODES = {
    "keyword": T_KEYWORD, "wildcard": T_KEYWORD, "constant_keyword": T_KEYWORD,
    "text": T_KEYWORD, "match_only_text": T_KEYWORD, "flattened": T_KEYWORD,
    "long": T_LONG, "integer": T_LONG, "short": T_LONG, "byte": T_LONG,
    "unsigned_long": T_ULONG,
    "float": T_FLOAT, "double": T_FLOAT, "half_float": T_FLOAT, "scaled_float": T_FLOAT,
    "boolean": T_BOOL, "date": T_DATE, "ip": T_IP,
}

# Default limits (ingest.max_field_chars / ingest.max_list_items override them at a hub).
MAX_CHARS = 8192  # a path is at most 4096 bytes; the sensor cuts argv at 4 KiB
MAX_ITEMS = 1024  # the sensor cuts argv at 64 arguments


def _code(name: str, f: ecs.Field) -> int:
    if name in ecs.HUB_FIELDS:
        return T_HUB
    if name.startswith(ecs.HUB_ONLY):
        return T_DROP
    try:
        code = _CODES[f.type]
    except KeyError:
        raise RuntimeError(f"common/ecs.py: field {name} has type {f.type!r}, which the "
                           "hub's schema check does not know (add it to hub/validate.py)") \
            from None
    return code | T_ARRAY if f.array else code


# Every field some action requires gets a bit: the C loop checks presence with a mask.
_REQUIRED_FIELDS = tuple(dict.fromkeys(
    (*ecs.COMMON, *(name for fields in ecs.REQUIRED.values() for name in fields))))
if len(_REQUIRED_FIELDS) > 64:
    raise RuntimeError("common/ecs.py requires more than 64 distinct fields: the hub's "
                       "schema check keeps them in a 64-bit mask (hub/_batch.pyx)")
_BITS = {name: i for i, name in enumerate(_REQUIRED_FIELDS)}


def _mask(names: tuple[str, ...]) -> int:
    return sum(1 << _BITS[name] for name in set(names))


def _entry(name: str, f: ecs.Field | None) -> int:
    """The C loop's table entry: type code, and the field's required bit + 1 above it."""
    if f is None:
        raise RuntimeError(f"common/ecs.py: required field {name} is not in FIELDS")
    bit = _BITS.get(name)
    return _code(name, f) | ((bit + 1) << 8 if bit is not None else 0)


_TYPES = {name: _entry(name, f) for name, f in ecs.FIELDS.items() if not name.endswith("*")}
for _name in _REQUIRED_FIELDS:  # a required member of a family
    if _name not in _TYPES:
        _TYPES[_name] = _entry(_name, ecs.field(_name))
_FAMILY_CODES: dict[str, int] = {}
_FAMILY_CACHE_MAX = 4096  # family members are sensor-chosen names: bound what is kept


def _resolve(name: str) -> int:
    """The entry of a member of a ``name.*`` family, 0 for a name the schema does not know."""
    code = _FAMILY_CODES.get(name)
    if code is None:
        f = ecs.field(name)
        code = _code(name, f) if f is not None else 0
        if len(_FAMILY_CODES) < _FAMILY_CACHE_MAX:
            _FAMILY_CODES[name] = code
    return code


# ecs.REQUIRED as masks of _REQUIRED_FIELDS bits (COMMON included).
_COMMON_MASK = _mask(ecs.COMMON)
_REQUIRED_MASKS = {action: _mask((*ecs.COMMON, *fields))
                   for action, fields in ecs.REQUIRED.items()}


@dataclass(frozen=True, slots=True)
class Limits:
    max_chars: int = MAX_CHARS
    max_items: int = MAX_ITEMS


@dataclass(slots=True)
class Checked:
    """What :func:`check` found: the refused events and what it changed in the others."""

    refused: list[tuple[int, str]]  # (position, what is wrong)
    unknown: list[str] = field(default_factory=list)  # fields removed (one name per removal)
    truncated: list[str] = field(default_factory=list)  # fields cut (one name per cut)


def check(events: list[Any], limits: Limits = Limits()) -> Checked:  # noqa: B008 (frozen)
    """Check ``events`` in place (see the module doc)."""
    unknown: list[str] = []
    cut: list[str] = []
    bad = refused(events, _REQUIRED_MASKS, _COMMON_MASK, _REQUIRED_FIELDS, _TYPES, _resolve,
                  limits.max_chars, limits.max_items, unknown, cut)
    return Checked(bad, unknown, cut)


def problems(events: list[Any]) -> list[tuple[int, str]]:
    """``(position, what is wrong)`` for every event the hub refuses; empty when all pass."""
    return check(events).refused
