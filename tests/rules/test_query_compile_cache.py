"""Compile-time caches never mix up literals that are equal as dict keys (1, 1.0, True)."""

from __future__ import annotations

from threatseer.hub.rules.query import compile_condition, parse
from threatseer.hub.rules.query.ast import Cmp, Field
from threatseer.hub.rules.query.compiler import equality_set


def test_equality_set_cache_is_typed() -> None:
    assert equality_set((1,), False) == {1, "1"}
    assert equality_set((True,), False) == {True, "true"}
    assert equality_set((1.0,), False) == {1.0, "1.0"}
    assert equality_set((1,), False) == {1, "1"}  # again, from the cache
    assert equality_set(("A",), True) == {"a"}
    assert equality_set(("A",), False) == {"A"}


def test_conditions_sharing_cached_sets_keep_their_meaning() -> None:
    one = compile_condition(Cmp(Field("x"), "=", (1,)))
    true = compile_condition(Cmp(Field("x"), "=", (True,)))
    assert one({"x": "1"}) and not one({"x": "true"})
    assert true({"x": "true"}) and not true({"x": "1"})
    assert compile_condition(parse("x ieq ABC"))({"x": "abc"})
    assert not compile_condition(parse("x = ABC"))({"x": "abc"})
