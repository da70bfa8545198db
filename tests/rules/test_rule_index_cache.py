"""The index's per-field lookup cache (native/_rule_index.pyx ``lookup``): a cached result is
the one a fresh lookup computes, and the cache stays within its bounds (entries, and the
characters of its keys together, which is what bounds its memory)."""

from __future__ import annotations

import random

import pytest
from rules_helpers import DEFAULT_BUNDLE

from threatseer.hub.rules import _rule_index as native
from threatseer.hub.rules.bundle import load_bundle


@pytest.fixture(scope="module")
def command_line_index():
    """The default bundle's exec bucket's index of process.command_line (needles)."""
    rs = load_bundle(DEFAULT_BUNDLE).ruleset
    fi = rs._buckets["exec"].fields["process.command_line"]
    assert fi.automaton is not None  # needle search: a miss costs an automaton pass
    return fi


def _key_chars(cache: dict) -> int:
    return sum(1 + (len(k) if isinstance(k, str) else
                    sum(map(len, k)) if isinstance(k, tuple) else 0) for k in cache)


def _fresh(fi, value):
    """What ``lookup`` computes for ``value`` with nothing cached (the cache is restored)."""
    saved, held = dict(fi.cache), list(fi.native[5])
    fi.cache.clear()
    fi.native[5][0] = 0
    try:
        return native.lookup(fi, value)
    finally:
        fi.cache.clear()
        fi.cache.update(saved)
        fi.native[5][:] = held


def test_cached_lookups_equal_fresh_ones(command_line_index) -> None:
    fi = command_line_index
    rng = random.Random(3)
    words = ["curl", "wget", "base64", "-d", "bash", "-c", "nc", "/dev/tcp/10.0.0.1/4242",
             "python3", "pty", "spawn", "ls", "-la", "/tmp/x", "chmod", "+x", "crontab", "-e"]
    values = [" ".join(rng.choice(words) for _ in range(rng.randint(1, 6))) for _ in range(300)]
    values += [[*v.split()] for v in values[:100]]  # argv-like lists are cached as tuples
    for v in values * 2:  # the second pass answers from the cache
        assert native.lookup(fi, v) == _fresh(fi, v), v
    assert any(native.lookup(fi, v)[0] for v in values)  # real hits, not only empty sets


def test_cache_keeps_within_its_entry_and_character_bounds(command_line_index) -> None:
    fi = command_line_index
    fi.cache.clear()
    fi.native[5][0] = 0
    # Short values: the entry bound holds them all up to FIELD_CACHE_MAX, then empties.
    n = native.FIELD_CACHE_MAX
    for i in range(n):
        native.lookup(fi, f"ls /srv/{i}")
    assert len(fi.cache) == n
    assert fi.native[5][0] == _key_chars(fi.cache)
    native.lookup(fi, "ls /srv/one-more")
    assert len(fi.cache) == 1
    # Long values: the character budget empties the cache long before the entry bound.
    fi.cache.clear()
    fi.native[5][0] = 0
    size = native.CACHED_LEN
    most = 0
    for i in range(2 * native.CACHED_CHARS // size):
        native.lookup(fi, f"{i:08d}".ljust(size, "a"))
        assert fi.native[5][0] <= native.CACHED_CHARS
        if i % 1024 == 0:
            assert fi.native[5][0] == _key_chars(fi.cache)
        most = max(most, len(fi.cache))
    assert most == native.CACHED_CHARS // (size + 1)
    # Longer than CACHED_LEN: never cached.
    native.lookup(fi, "x" * (size + 1))
    assert ("x" * (size + 1)) not in fi.cache
    fi.cache.clear()
    fi.native[5][0] = 0
