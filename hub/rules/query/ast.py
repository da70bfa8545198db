"""Condition AST: a handful of immutable nodes both the query parser and Sigma produce.

``Cmp.values`` is always a tuple: a comparison holds when the field matches ANY of them
(``x in (a, b)`` and Sigma's value lists are the same node). On list-valued fields
(``process.args``, ``event.category``, ``threatseer.ancestors``) a comparison holds when ANY
element matches; ``!=`` is written as ``Not(Cmp("="))`` so it means "no element equals".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# Operators a Cmp may carry. "exists" ignores values.
OPS = frozenset({
    "=", "<", "<=", ">", ">=", "contains", "startswith", "endswith", "glob", "regex",
    "cidr", "exists",
})


@dataclass(frozen=True, slots=True)
class Field:
    """An event field, optionally one element of a list field (``threatseer.ancestors[0]``)."""

    name: str
    index: int | None = None
    # Alternative names tried in order when the first is absent (Sigma's DestinationHostname).
    fallbacks: tuple[str, ...] = ()

    def __str__(self) -> str:
        return self.name if self.index is None else f"{self.name}[{self.index}]"


@dataclass(frozen=True, slots=True)
class Cmp:
    field: Field
    op: str
    values: tuple[Any, ...] = ()
    nocase: bool = False


@dataclass(frozen=True, slots=True)
class And:
    items: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class Or:
    items: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class Not:
    item: Node


@dataclass(frozen=True, slots=True)
class Const:
    value: bool


Node = Cmp | And | Or | Not | Const


@dataclass(frozen=True, slots=True)
class Step:
    """One step of a :class:`Sequence`: events matching ``condition``, joined to the other
    steps on ``by`` (the sequence's own ``by`` when empty), ``runs`` times (with ``distinct``:
    that many different values of that field)."""

    condition: Node
    by: tuple[Field, ...] = ()
    runs: int = 1
    distinct: Field | None = None


@dataclass(frozen=True, slots=True)
class Sequence:
    """``sequence by F within T [step] [step] ...``: the steps' events in that order, sharing
    the values of their join fields, the last within ``within`` seconds of the first.
    ``sample by F within T [step] ...`` (``ordered`` false): the same in any order."""

    by: tuple[Field, ...]
    within: float
    steps: tuple[Step, ...]
    ordered: bool = True


def conj(*items: Node) -> Node:
    """``And`` of ``items``, flattened; a single item stands for itself."""
    flat: list[Node] = []
    for item in items:
        flat.extend(item.items if isinstance(item, And) else (item,))
    return flat[0] if len(flat) == 1 else And(tuple(flat))


def disj(*items: Node) -> Node:
    flat: list[Node] = []
    for item in items:
        flat.extend(item.items if isinstance(item, Or) else (item,))
    return flat[0] if len(flat) == 1 else Or(tuple(flat))
