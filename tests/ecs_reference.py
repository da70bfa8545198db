"""Checks against the Elastic Common Schema reference vendored in tests/data/ecs.

The schema (``threatseer.common.ecs``) says what each field is; this module says whether that
is what ECS says: a field ECS names must have ECS's type and one of ECS's allowed values, an
event's category/type pairs must be ones ECS allows, and a field ECS does not name must live
under ``threatseer.*``. The sensor's, the hub's and the index template's tests use it.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import yaml

from threatseer.common import ecs

REFERENCE = Path(__file__).resolve().parent / "data" / "ecs" / "ecs_flat.yml"

# Python types an event's values arrive as, per Elasticsearch type (ECS's keyword ids are
# strings: a number there is a mapping conflict waiting for the first non-numeric value).
PY_TYPES: dict[str, tuple[type, ...]] = {
    "keyword": (str,), "constant_keyword": (str,), "wildcard": (str,), "text": (str,),
    "match_only_text": (str,), "date": (str,), "ip": (str,), "long": (int,),
    "unsigned_long": (int,), "float": (int, float), "boolean": (bool,), "object": (dict,),
}
# Fields whose values ECS lists (allowed_values, or expected_values for a few).
_OWN_NAMESPACE = "threatseer."


@functools.cache
def reference() -> dict[str, dict[str, Any]]:
    with REFERENCE.open() as f:
        return yaml.load(f, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


def version() -> str:
    """The ECS release the vendored reference is (from SOURCE: '... tag vX.Y.Z: ...')."""
    text = (REFERENCE.parent / "SOURCE").read_text()
    return text.split("tag v", 1)[1].split(":", 1)[0].strip()


def allowed_values(name: str) -> set[str] | None:
    f = reference().get(name)
    if f is None:
        return None
    if f.get("allowed_values"):
        return {a["name"] for a in f["allowed_values"]}
    if f.get("expected_values"):
        return set(f["expected_values"])
    return None


def expected_types() -> dict[str, set[str]]:
    """event.category value -> the event.type values ECS allows with it."""
    return {a["name"]: set(a.get("expected_event_types") or ())
            for a in reference()["event.category"]["allowed_values"]}


def schema_problems(name: str) -> list[str]:
    """What is wrong with the schema's entry for ``name`` by ECS's reference."""
    f = ecs.field(name)
    ref = reference().get(name)
    if f is None:
        return [f"{name}: not in the schema"]
    if ref is None:
        if not name.startswith(_OWN_NAMESPACE):
            return [f"{name}: not an ECS field and not under {_OWN_NAMESPACE}*"]
        return []
    problems = []
    if f.type != ref["type"]:
        problems.append(f"{name}: schema type {f.type}, ECS {ref['type']}")
    if "array" in (ref.get("normalize") or ()) and not f.array:
        problems.append(f"{name}: ECS has it as an array")
    return problems


def value_problems(name: str, value: Any) -> list[str]:
    """What is wrong with one field's value: in the schema with the type it is sent as, and,
    for an ECS field, ECS's type and allowed values."""
    f = ecs.field(name)
    if f is None:
        return [f"{name}: not in the schema"]
    problems = schema_problems(name)
    values = value if isinstance(value, list) else [value]
    if f.array != isinstance(value, list) and value != []:
        problems.append(f"{name}: list expected" if f.array else f"{name}: list not expected")
    for v in values:
        if not isinstance(v, PY_TYPES[f.type]) or (f.type in ("long", "float")
                                                   and isinstance(v, bool)):
            problems.append(f"{name}: {type(v).__name__} is not {f.type}")
    allowed = allowed_values(name)
    if allowed is not None:
        problems += [f"{name}: {v!r} is not one of ECS's values" for v in values
                     if v not in allowed]
    return problems


def event_problems(flat: dict[str, Any]) -> list[str]:
    """Every problem of one flat event: each field, and its category/type pairs."""
    problems = [p for name, value in flat.items() for p in value_problems(name, value)]
    allowed = expected_types()
    for cat in flat.get("event.category") or ():
        for typ in flat.get("event.type") or ():
            if typ not in allowed.get(cat, ()):
                problems.append(f"event.type {typ!r} is not allowed with category {cat!r}")
    return problems
