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


def test_inline_list_and_element_tests_equal_the_closures() -> None:
    """List fields against a set (``_eq_any``) and list elements (``a[1]``) are generated
    inline: the same answers as the per-item closures on odd shapes and types."""
    from threatseer.hub.rules.query.compiler import _closures

    conditions = ["a in (x, y, 1)", "a[1] in (x, y, 1)", "a[0] contains x", "a[2] iendswith Y",
                  "a[1] regex '^x'", "not a[1] = x", "a[1] startswith (x, y)"]
    values = [None, "x", "X", 1, True, 1.0, [], ["x"], ["z", "x"], ["z", 1], ["z", ["x"]],
              ("z", "x"), ["z", None, "y"], ["z", {"x": 1}, "x"], [{"x": 1}], {"x": 1},
              ["a", "b", "XY"], "zx"]
    for text in conditions:
        node = parse(text)
        gen, old = compile_condition(node), _closures(node)
        assert gen.__code__.co_filename == "<condition>"
        for v in values:
            ev = {} if v is None else {"a": v}
            assert bool(gen(ev)) == bool(old(ev)), (text, v)


def test_two_or_three_contains_needles_written_out_equal_the_value_test() -> None:
    """``contains`` with two or three needles is written out as one ``in`` per needle (no
    any(map(...))): on every value shape it answers as the operator's own value test, applied
    to the value or to each item of a list."""
    from threatseer.hub.rules.query.compiler import _value_test

    conditions = ["a contains (x, yz)", "a icontains (X, yZ, q)", "a contains (Q, x, '')",
                  "a icontains ('İ', k)", "a[1] contains (x, yz)", "a[0] icontains (X, q)"]
    values = [None, "x", "X", "yz", "aYZb", "q", "", "İ", "i̇", "\u212a", 1, True, 1.5, [],
              ["x"], ["z", "YZ"], ["z", 1], ["Q", "x"], ("z", "x")]
    for text in conditions:
        node = parse(text)
        cmp = node if isinstance(node, Cmp) else None
        assert cmp is not None, text
        test = _value_test(cmp)
        pred = compile_condition(node)
        assert pred.__code__.co_filename == "<condition>"
        for v in values:
            ev = {} if v is None else {"a": v}
            got = cmp.field.index
            if got is None:
                want = False if v is None else (
                    any(map(test, v)) if isinstance(v, list) else test(v))
            else:
                item = v[got] if isinstance(v, list | tuple) and len(v) > got else None
                want = False if item is None else (
                    any(map(test, item)) if isinstance(item, list) else test(item))
            assert bool(pred(ev)) == bool(want), (text, v)
