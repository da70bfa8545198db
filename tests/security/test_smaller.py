"""Item 13, the smaller ones: the admin endpoint tells nothing without a key and a signed
request works only on the hub it names; clients that do not speak CURVE are counted; the
ledger survives SQLite rolling a commit back itself (a full disk) with its state intact.
"""

from __future__ import annotations

import gc
import os
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest
import zmq
from nacl.signing import SigningKey
from security_helpers import WireSensor, exec_event
from transport_helpers import HubProc, Keys, endpoint, hub_cfg, wait_for

from threatseer.hub.ledger import NEW, Ledger
from threatseer.hub.rules.admin import AdminClient, AdminError
from threatseer.hub.rules.signing import b64


def _admin_hub(tmp_path: Path, name: str, key: SigningKey) -> HubProc:
    cfg = hub_cfg(tmp_path / name, None, admin={
        "endpoint": endpoint(), "admin_keys": [b64(bytes(key.verify_key))]})
    (tmp_path / name).mkdir()
    return HubProc(tmp_path / name, cfg)


def test_the_admin_endpoint_needs_a_key_and_requests_name_their_hub(tmp_path, procs) -> None:
    key = SigningKey.generate()
    a, b = _admin_hub(tmp_path, "a", key).start(), _admin_hub(tmp_path, "b", key).start()
    procs += [a, b]
    with pytest.raises(AdminError, match="unknown admin key"):
        AdminClient(a.cfg["admin"]["endpoint"], None, timeout=10).list()
    client_a = AdminClient(a.cfg["admin"]["endpoint"], key, timeout=10)
    assert client_a.list()["installed"] == []
    # A request signed for hub a, captured and sent to hub b within its time window.
    frames = client_a.frames("rollback", {"version": "1.0.0"})
    reply = AdminClient(b.cfg["admin"]["endpoint"], key, timeout=10).send_frames(frames)
    assert not reply["ok"] and "signed for another hub" in reply["error"]
    assert a.stop() == 0 and b.stop() == 0


def test_clients_without_curve_are_counted(tmp_path, procs) -> None:
    keys = Keys(tmp_path / "keys")
    cfg = hub_cfg(tmp_path, keys)
    hub = HubProc(tmp_path, cfg).start()
    procs.append(hub)
    plain = WireSensor(cfg["ingest"]["endpoint"], "plain")  # no CURVE at all
    try:
        plain.send([exec_event("plain", 0)])
        auth = wait_for(lambda: hub.status()["transport"]["auth"]["ingest"]["no_curve"] and
                        hub.status()["transport"]["auth"]["ingest"], 15, "the refusal counted")
    finally:
        plain.close()
    assert auth["refused"] >= auth["no_curve"] >= 1
    ctx = zmq.Context()  # and a subscriber without CURVE on the PUB socket
    sub = ctx.socket(zmq.SUB)
    sub.connect(cfg["publish"]["endpoint"])
    try:
        wait_for(lambda: hub.status()["transport"]["auth"]["publish"]["no_curve"], 15,
                 "the subscriber's refusal counted")
    finally:
        sub.close(0)
        ctx.term()
    assert "handshake failed before authentication" in hub.log_text()
    assert hub.stop() == 0


def test_the_ledger_keeps_its_state_when_sqlite_rolled_back_itself(tmp_path) -> None:
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mnt = tmp_path / "disk"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "ts-test-ledger", str(mnt)],
                   check=True)
    led = durable = None
    try:
        led = Ledger(str(mnt / "ledger.db"), keep_batches=1_000_000)
        led.admit("s", 1, 1, 1)
        led.scored("s", 1, 1, 10, 10)
        led.commit()
        seq, failed = 1, None
        while failed is None and seq < 100_000:  # each commit adds rows until the disk is full
            for _ in range(50):
                seq += 1
                assert led.admit("s", 1, seq, 1).kind == NEW
                led.scored("s", 1, seq, 10, 10)
            try:
                led.commit()
            except sqlite3.Error as exc:
                failed = exc
        assert failed is not None and "full" in str(failed), failed
        assert "rollback" not in str(failed).lower()  # the original error, not ROLLBACK's
        durable = sqlite3.connect(str(mnt / "ledger.db"))
        high = durable.execute("SELECT high FROM sensors WHERE sid = 's'").fetchone()[0]
        assert led.state["s"].high == high == seq - 50  # not the batches never committed
    finally:
        for db in (durable, led.db if led is not None else None):
            if db is not None:
                db.close()
        gc.collect()
        for _ in range(50):
            if subprocess.run(["umount", str(mnt)], capture_output=True).returncode == 0:
                break
            time.sleep(0.1)
        else:  # never left mounted: detached now, freed when the last file closes
            subprocess.run(["umount", "-l", str(mnt)], check=True)
