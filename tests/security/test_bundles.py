"""Item 7: who may set the rules. A real hub process with its admin endpoint.

An unsigned bundle is refused when no trusted signing key is set (Salt's default) unless
``admin.allow_unsigned`` says otherwise (and the hub says so at start); a rollback to a bundle
that no longer verifies changes nothing; a hub whose active bundle no longer verifies at start
runs the last good one instead of no rules at all.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
from nacl.signing import SigningKey
from transport_helpers import HubProc, endpoint, hub_cfg, wait_for

from threatseer.hub.rules.admin import AdminClient, AdminError
from threatseer.hub.rules.signing import b64, sign_archive

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "rules"))
from rules_helpers import build  # noqa: E402


def _hub(tmp_path: Path, trusted: list[SigningKey], **admin: Any) -> tuple[HubProc, SigningKey]:
    key = SigningKey.generate()
    cfg = hub_cfg(tmp_path, None, admin={
        "endpoint": endpoint(), "admin_keys": [b64(bytes(key.verify_key))],
        "trusted_signing_keys": [b64(bytes(k.verify_key)) for k in trusted], **admin})
    return HubProc(tmp_path, cfg), key


def _client(hub: HubProc, key: SigningKey) -> AdminClient:
    return AdminClient(hub.cfg["admin"]["endpoint"], key, timeout=30)


def _active(hub: HubProc, version: str) -> dict[str, Any] | None:
    b = hub.status()["bundle"]
    return b if b["version"] == version else None


def test_unsigned_bundles_are_refused_without_trusted_keys(tmp_path, procs) -> None:
    hub, key = _hub(tmp_path, [])
    (tmp_path / "unsigned.tar.gz").write_bytes(build(tmp_path, "0.9.0"))
    hub.cfg["bundle"] = str(tmp_path / "unsigned.tar.gz")
    hub.config.write_text(json.dumps(hub.cfg))
    hub.start()
    procs.append(hub)
    assert "no trusted signing keys are configured" in hub.log_text()
    assert wait_for(lambda: _active(hub, "0"), 10, "the hub on no bundle")
    with pytest.raises(AdminError, match="no trusted signing keys are configured"):
        _client(hub, key).publish(build(tmp_path, "1.0.0"))
    assert hub.stop() == 0
    # allow_unsigned is the operator's explicit choice, and the hub says so at start
    hub.cfg["admin"]["allow_unsigned"] = True
    hub.config.write_text(json.dumps(hub.cfg))
    hub.start()
    assert "admin.allow_unsigned: true" in hub.log_text()
    assert wait_for(lambda: _active(hub, "0.9.0"), 10, "the unsigned bundle, allowed")
    assert hub.stop() == 0


def test_a_failed_rollback_changes_nothing(tmp_path, procs) -> None:
    old, new = SigningKey.generate(), SigningKey.generate()
    hub, key = _hub(tmp_path, [old, new])
    hub.start()
    procs.append(hub)
    client = _client(hub, key)
    for version, signer in (("1.0.0", new), ("1.1.0", old), ("1.2.0", new)):
        client.publish(sign_archive(build(tmp_path, version), signer))
    hub.stop()
    # The old signing key is retired: 1.1.0 no longer verifies.
    hub.cfg["admin"]["trusted_signing_keys"] = [b64(bytes(new.verify_key))]
    hub.config.write_text(json.dumps(hub.cfg))
    hub.start()
    state = Path(hub.cfg["state_dir"]) / "state.json"
    before = json.loads(state.read_text())
    assert before == {"active": "1.2.0", "history": ["1.0.0", "1.1.0", "1.2.0"]}
    with pytest.raises(AdminError, match="untrusted key"):
        client.rollback()
    assert json.loads(state.read_text()) == before
    assert client.list()["active"] == "1.2.0"
    assert client.rollback("1.0.0")["active"]["version"] == "1.0.0"
    assert hub.stop() == 0


def test_a_hub_whose_active_bundle_fails_at_start_runs_the_last_good_one(
        tmp_path, procs) -> None:
    signer = SigningKey.generate()
    hub, key = _hub(tmp_path, [signer])
    hub.start()
    procs.append(hub)
    client = _client(hub, key)
    for version in ("1.0.0", "1.1.0"):
        client.publish(sign_archive(build(tmp_path, version), signer))
    assert hub.stop() == 0
    # Someone with write access to the state directory swaps the active bundle's rules.
    bundles = Path(hub.cfg["state_dir"]) / "bundles"
    (bundles / "1.1.0.tar.gz").write_bytes(build(tmp_path, "1.1.0", rule_score=1))
    hub.start()
    assert wait_for(lambda: _active(hub, "1.0.0"), 10, "the last good bundle")
    assert "running the last good bundle, 1.0.0, instead of 1.1.0" in hub.log_text()
    assert hub.stop() == 0
