"""Malformed bundle files never crash the loader: they give BundleError (file:line) or load."""

from __future__ import annotations

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from threatseer.hub.rules.bundle import BundleError, load_files

KEYS = ["rules", "lists", "macros", "tests", "sigma", "rule", "condition", "score", "tags",
        "exceptions", "fields", "values", "match", "no_match", "enabled", "output",
        "risky_processes", "sensitive_files", "iocs", "sha256", "networks", "domains", "name",
        "glob", "read_score", "write_score", "exclude", "overrides", "version"]
scalars = st.one_of(st.none(), st.booleans(), st.integers(-5, 5),
                    st.sampled_from(["x", "a = 1", "process.name in (", "exec", "/etc/shadow",
                                     "event.action = exec", "1.0", "[", "not"]))
docs = st.recursive(
    scalars,
    lambda children: st.one_of(st.lists(children, max_size=4),
                               st.dictionaries(st.sampled_from(KEYS), children, max_size=5)),
    max_leaves=25,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rules=docs, static=docs, manifest=docs)
def test_random_documents_give_bundle_errors_not_crashes(rules, static, manifest) -> None:
    files = {
        "manifest.yaml": yaml.safe_dump(manifest).encode(),
        "static.yaml": yaml.safe_dump(static).encode(),
        "rules/a.yaml": yaml.safe_dump(rules).encode(),
    }
    try:
        load_files(files, "fuzz")
    except BundleError as exc:
        assert exc.errors and all(e.startswith("fuzz/") for e in exc.errors)


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_give_bundle_errors(data: bytes) -> None:
    files = {"manifest.yaml": b"name: x\nversion: '1'\n", "rules/a.yaml": data,
             "sigma/x.yml": data}
    try:
        bundle = load_files(files, "fuzz")
    except BundleError:
        return
    assert len(bundle.unsupported) <= 1
