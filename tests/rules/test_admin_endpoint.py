"""The admin endpoint over real ZeroMQ sockets: auth, replay protection, hot swap callback."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import zmq
from nacl.signing import SigningKey
from rules_helpers import build

from threatseer.hub.rules.admin import AdminClient, AdminError, AdminServer
from threatseer.hub.rules.signing import b64
from threatseer.hub.rules.store import BundleStore


@pytest.fixture
def admin(tmp_path: Path, port: int):
    key = SigningKey.generate()
    activated: list = []
    store = BundleStore(tmp_path / "state", allow_unsigned=True)
    server = AdminServer(store, f"tcp://127.0.0.1:{port}", [key.verify_key], activated.append)
    server.start()
    try:
        yield server, key, activated, f"tcp://127.0.0.1:{port}"
    finally:
        server.stop()


def test_publish_list_rollback_with_admin_key(admin, tmp_path: Path) -> None:
    server, key, activated, endpoint = admin
    client = AdminClient(endpoint, key, timeout=30)
    assert client.list()["installed"] == []
    reply = client.publish(build(tmp_path, "1.0.0", 10))
    assert reply["active"]["version"] == "1.0.0" and reply["active"]["rules"] == 1
    client.publish(build(tmp_path, "1.1.0", 20))
    assert [b.manifest.version for b in activated] == ["1.0.0", "1.1.0"]
    listing = client.list()
    assert listing["active"] == "1.1.0"
    assert [i["version"] for i in listing["installed"]] == ["1.0.0", "1.1.0"]
    assert client.rollback()["active"]["version"] == "1.0.0"
    assert client.rollback("1.1.0")["active"]["version"] == "1.1.0"
    assert [b.manifest.version for b in activated] == ["1.0.0", "1.1.0", "1.0.0", "1.1.0"]


def test_bad_bundle_refused_previous_stays_active(admin, tmp_path: Path) -> None:
    server, key, activated, endpoint = admin
    client = AdminClient(endpoint, key, timeout=30)
    client.publish(build(tmp_path, "1.0.0"))
    with pytest.raises(AdminError, match="bundle tests failed"):
        client.publish(build(tmp_path, "2.0.0", broken=True))
    assert client.list()["active"] == "1.0.0"
    assert [b.manifest.version for b in activated] == ["1.0.0"]


def test_wrong_key_and_no_key_are_refused(admin, tmp_path: Path) -> None:
    server, key, activated, endpoint = admin
    archive = build(tmp_path, "1.0.0")
    with pytest.raises(AdminError, match="unknown admin key"):
        AdminClient(endpoint, SigningKey.generate(), timeout=30).publish(archive)
    with pytest.raises(AdminError, match="unknown admin key"):
        AdminClient(endpoint, None, timeout=30).rollback()
    # A header claiming the admin's public key but signed by another key.
    forger = AdminClient(endpoint, SigningKey.generate(), timeout=30)
    frames = forger.frames("publish", payload=archive)
    header = json.loads(frames[0])
    header["key"] = b64(bytes(key.verify_key))
    frames[0] = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    reply = forger.send_frames(frames)
    assert not reply["ok"] and "bad signature" in reply["error"]
    assert activated == [] and server.counters["refused"] == 3


def test_replayed_stale_and_swapped_payload_requests_are_refused(admin, tmp_path: Path) -> None:
    server, key, activated, endpoint = admin
    client = AdminClient(endpoint, key, timeout=30)
    frames = client.frames("publish", payload=build(tmp_path, "1.0.0"))
    assert client.send_frames(frames)["ok"]
    replay = client.send_frames(frames)
    assert not replay["ok"] and "replayed" in replay["error"]

    other = client.frames("publish", payload=build(tmp_path, "1.0.1"))
    other[2] = build(tmp_path, "6.6.6")  # payload swapped after signing
    swapped = client.send_frames(other)
    assert not swapped["ok"] and "payload does not match" in swapped["error"]

    stale = client.frames("rollback")
    header = json.loads(stale[0])
    header["ts"] = time.time() - 3600
    stale[0] = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    stale[1] = key.sign(b"threatseer-admin-v1:" + stale[0]).signature
    reply = client.send_frames(stale)
    assert not reply["ok"] and "timestamp" in reply["error"]
    assert [b.manifest.version for b in activated] == ["1.0.0"]


def test_malformed_frames_get_an_error_and_the_server_keeps_serving(admin) -> None:
    server, key, activated, endpoint = admin
    ctx = zmq.Context.instance()
    sock = ctx.socket(zmq.REQ)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(endpoint)
    try:
        sock.send(b"not json")
        assert sock.poll(10000)
        assert b"malformed" in sock.recv()
    finally:
        sock.close()
    assert AdminClient(endpoint, key, timeout=30).list()["ok"]


def test_no_answer_times_out(port: int) -> None:
    with pytest.raises(AdminError, match="no answer"):
        AdminClient(f"tcp://127.0.0.1:{port}", None, timeout=0.3).list()


def test_failing_on_activate_is_reported_not_fatal(tmp_path: Path, port: int) -> None:
    key = SigningKey.generate()

    def broken(bundle) -> None:
        raise RuntimeError("hub busy")

    server = AdminServer(BundleStore(tmp_path / "state", allow_unsigned=True), f"tcp://127.0.0.1:{port}",
                         [key.verify_key], broken)
    server.start()
    try:
        client = AdminClient(f"tcp://127.0.0.1:{port}", key, timeout=30)
        reply = client.publish(build(tmp_path, "1.0.0"))
        assert "swap failed: hub busy" in reply["warning"]
        assert client.list()["active"] == "1.0.0"
    finally:
        server.stop()


def test_replay_is_refused_after_a_restart(tmp_path: Path, port: int) -> None:
    key = SigningKey.generate()
    endpoint = f"tcp://127.0.0.1:{port}"
    client = AdminClient(endpoint, key, timeout=30)
    store = BundleStore(tmp_path / "state", allow_unsigned=True)
    store.publish(build(tmp_path, "1.0.0"))
    store.publish(build(tmp_path, "1.1.0"))
    server = AdminServer(store, endpoint, [key.verify_key])
    server.start()
    frames = client.frames("rollback")  # signed for this hub (its id is asked first)
    try:
        assert client.send_frames(frames)["active"]["version"] == "1.0.0"
    finally:
        server.stop()
    server = AdminServer(BundleStore(tmp_path / "state", allow_unsigned=True), endpoint, [key.verify_key])
    server.start()
    try:
        reply = client.send_frames(frames)
        assert not reply["ok"] and "replayed" in reply["error"]
        assert client.list()["active"] == "1.0.0"
    finally:
        server.stop()
