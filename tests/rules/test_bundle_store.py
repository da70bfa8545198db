"""BundleStore: install (verify, compile, test first), activate, rollback, persistence."""

from __future__ import annotations

from pathlib import Path

import pytest
from nacl.signing import SigningKey
from rules_helpers import build

from threatseer.hub.rules.signing import sign_archive
from threatseer.hub.rules.store import BundleStore, StoreError

WEB_SHELL = {"event.action": "exec", "process.name": "sh", "process.parent.name": "nginx"}


def score(bundle) -> int:
    return bundle.ruleset.match(WEB_SHELL)[0].score


def test_install_activate_rollback_and_persist(tmp_path: Path) -> None:
    store = BundleStore(tmp_path / "state", allow_unsigned=True)
    assert store.active() is None and store.installed() == []
    store.publish(build(tmp_path, "1.0.0", 10))
    store.publish(build(tmp_path, "1.1.0", 20))
    assert score(store.active()) == 20
    assert [(i["version"], i["active"]) for i in store.installed()] == [
        ("1.0.0", False), ("1.1.0", True)]

    # A new store on the same directory (hub restart) gets the same active bundle.
    restarted = BundleStore(tmp_path / "state", allow_unsigned=True)
    assert restarted.active().manifest.version == "1.1.0" and score(restarted.active()) == 20

    assert restarted.rollback().manifest.version == "1.0.0"
    assert BundleStore(tmp_path / "state", allow_unsigned=True).active().manifest.version == "1.0.0"
    with pytest.raises(StoreError, match="no earlier version"):
        restarted.rollback()
    assert restarted.rollback("1.1.0").manifest.version == "1.1.0"
    with pytest.raises(StoreError, match="not installed"):
        restarted.activate("9.9.9")


def test_bad_bundles_are_refused_and_change_nothing(tmp_path: Path) -> None:
    store = BundleStore(tmp_path / "state", allow_unsigned=True)
    store.publish(build(tmp_path, "1.0.0", 10))
    with pytest.raises(StoreError, match="bundle tests failed"):
        store.publish(build(tmp_path, "2.0.0", broken=True))
    with pytest.raises(StoreError, match="not a bundle archive"):
        store.publish(b"garbage")
    with pytest.raises(StoreError, match="already installed with other content"):
        store.publish(build(tmp_path, "1.0.0", 99))
    assert store.active().manifest.version == "1.0.0" and score(store.active()) == 10
    assert [i["version"] for i in store.installed()] == ["1.0.0"]
    # Re-publishing identical content is fine.
    store.publish(build(tmp_path, "1.0.0", 10))


def test_trusted_keys_refuse_unsigned_tampered_and_foreign(tmp_path: Path) -> None:
    key, other = SigningKey.generate(), SigningKey.generate()
    store = BundleStore(tmp_path / "state", trusted_keys=[key.verify_key])
    with pytest.raises(StoreError, match="refused: bundle is not signed"):
        store.publish(build(tmp_path, "1.0.0"))
    with pytest.raises(StoreError, match="untrusted key"):
        store.publish(sign_archive(build(tmp_path, "1.0.0"), other))
    signed = sign_archive(build(tmp_path, "1.0.0"), key)
    store.publish(signed)
    assert store.active().manifest.version == "1.0.0"
    assert store.installed()[0]["signed"] is True
    # Same signature document on different content: tampered.
    from threatseer.hub.rules.archive import build_archive, read_archive

    files, sig = read_archive(signed)
    files["rules/main.yaml"] = files["rules/main.yaml"].replace(b"score: 70", b"score: 1")
    with pytest.raises(StoreError, match="tampered"):
        store.publish(build_archive(files, sig))
    assert score(store.active()) == 70


def test_corrupt_active_bundle_on_disk_gives_none_not_a_crash(tmp_path: Path) -> None:
    store = BundleStore(tmp_path / "state", allow_unsigned=True)
    store.publish(build(tmp_path, "1.0.0"))
    (tmp_path / "state" / "bundles" / "1.0.0.tar.gz").write_bytes(b"corrupt")
    fresh = BundleStore(tmp_path / "state", allow_unsigned=True)
    assert fresh.active() is None and "cannot be loaded" in fresh.last_error


def test_install_path_from_directory(tmp_path: Path) -> None:
    from rules_helpers import DEFAULT_BUNDLE

    store = BundleStore(tmp_path / "state", allow_unsigned=True)
    bundle = store.install_path(DEFAULT_BUNDLE)
    assert bundle.manifest.name == "threatseer-default"
    assert store.activate(bundle.manifest.version).digest == bundle.digest
