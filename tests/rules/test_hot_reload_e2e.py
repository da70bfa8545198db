"""Hot reload through the real ``threatseer hub`` process and the real ``threatseer rules`` CLI.

Events stream into the hub while a new signed bundle is published: none is lost, the new
rule fires from one batch on, a bad or unsigned bundle is refused with its error while the
previous stays active, and the active bundle survives a hub restart.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import zmq
from nacl.signing import SigningKey
from rules_helpers import SIMPLE_RULES, write_bundle

from threatseer.common.keys import write_key_pair
from threatseer.hub.rules.archive import build_archive, read_dir
from threatseer.hub.rules.signing import b64, sign_archive

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "hub"))
hub_helpers = pytest.importorskip("hub_helpers", reason="hub test helpers not available")

MARKER_RULE = """
  - rule: hot_reload_marker
    description: fires only in version 2
    condition: event.action = exec and process.args = hot-reload-marker
    score: 40
    tags: [attack.t1059]
    tests:
      match: [{event.action: exec, process.args: [x, hot-reload-marker]}]
      no_match: [{event.action: exec, process.args: [x]}]
"""


def archive(root: Path, version: str, extra: str = "", broken: bool = False,
            key: SigningKey | None = None) -> Path:
    text = SIMPLE_RULES + extra
    if broken:
        text = text.replace("process.parent.name: sshd}", "process.parent.name: nginx}")
    src = write_bundle(root / f"src-{version}", {"rules/main.yaml": text}, version=version)
    data = build_archive(read_dir(src))
    if key is not None:
        data = sign_archive(data, key)
    out = root / f"bundle-{version}.tar.gz"
    out.write_bytes(data)
    return out


def fired(ev: dict) -> set[str]:
    return {i["rule"] for i in ev.get("threatseer.indicators", [])}


def test_publish_while_streaming(tmp_path: Path, threatseer_cmd: list[str]) -> None:
    signing, admin = SigningKey.generate(), SigningKey.generate()
    write_key_pair(tmp_path / "admin.key", b64(bytes(admin)), b64(bytes(admin.verify_key)))
    admin_ep = hub_helpers.endpoint()
    cfg = {
        "ingest": {"endpoint": hub_helpers.endpoint()},
        "publish": {"endpoint": hub_helpers.endpoint()},
        "metrics": {"listen": f"127.0.0.1:{hub_helpers.free_port()}"},
        "actions": {"toss_below": -1000, "alert_at": 1000},
        "state_dir": str(tmp_path / "state"),
        "plaintext": True,  # transport security has its own tests (tests/transport)
        "admin": {"endpoint": admin_ep, "admin_keys": [b64(bytes(admin.verify_key))],
                  "trusted_signing_keys": [b64(bytes(signing.verify_key))]},
    }
    config = hub_helpers.write_yaml(tmp_path / "hub.yaml", cfg)
    v1 = archive(tmp_path, "1.0.0", key=signing)
    v2 = archive(tmp_path, "2.0.0", MARKER_RULE, key=signing)
    bad = archive(tmp_path, "3.0.0", MARKER_RULE, broken=True, key=signing)
    unsigned = archive(tmp_path, "4.0.0", MARKER_RULE)

    def rules(*args: str | Path) -> subprocess.CompletedProcess:
        return subprocess.run([*threatseer_cmd, "rules", *map(str, args), "--hub", admin_ep,
                               "-k", str(tmp_path / "admin.key")],
                              capture_output=True, text=True, timeout=120)

    ctx = zmq.Context.instance()
    hub = hub_helpers.HubProcess(threatseer_cmd, config)
    sender = hub_helpers.Sender(ctx, cfg["ingest"]["endpoint"], "sensor-hot")
    sub = hub_helpers.Subscriber(ctx, cfg["publish"]["endpoint"])
    try:
        hub_helpers.wait_connected(sender, sub)
        r = rules("publish", v1)
        assert r.returncode == 0, r.stderr
        assert "1.0.0" in r.stdout

        sent: list[int] = []
        stop = threading.Event()

        def stream() -> None:
            n = 0
            while not stop.is_set():
                batch = []
                for _ in range(10):
                    n += 1
                    batch.append(hub_helpers.exec_event(
                        "/usr/bin/x", ["x", "hot-reload-marker", str(n)]))
                    sent.append(n)
                sender.send(batch)
                time.sleep(0.005)

        streamer = threading.Thread(target=stream)
        streamer.start()
        received: list[dict] = []
        collector_stop = threading.Event()

        def collect() -> None:
            while not collector_stop.is_set() or len(received) < len(sent):
                got = sub.recv(0.5)
                if got is None:
                    if collector_stop.is_set():
                        return
                    continue
                received.append(got[1])

        collector = threading.Thread(target=collect)
        collector.start()
        time.sleep(1.0)
        r = rules("publish", v2)
        assert r.returncode == 0, r.stderr
        time.sleep(1.0)
        stop.set()
        streamer.join()
        time.sleep(1.0)
        collector_stop.set()
        collector.join(30)

        by_n = {int(ev["process.args"][2]): ev for ev in received
                if ev.get("event.action") == "exec" and len(ev.get("process.args", [])) == 3}
        assert len(sent) >= 200
        assert sorted(by_n) == sent, f"lost {len(sent) - len(by_n)} of {len(sent)} events"
        flags = ["hot_reload_marker" in fired(by_n[n]) for n in sent]
        switch = flags.index(True)
        assert switch > 0 and all(flags[switch:]), "rule must fire from the swap on, always"
        assert not any(flags[:switch])

        r = rules("publish", bad)
        assert r.returncode == 1 and "bundle tests failed" in r.stderr
        r = rules("publish", unsigned)
        assert r.returncode == 1 and "not signed" in r.stderr
        r = rules("list")
        assert r.returncode == 0 and "* 2.0.0" in r.stdout and "3.0.0" not in r.stdout
        sender.send([hub_helpers.exec_event("/usr/bin/x", ["x", "hot-reload-marker", "after"])])
        got = sub.collect(1, 10)
        assert got and "hot_reload_marker" in fired(got[0][1])
    finally:
        sub.close()
        sender.close()
        code, _, err = hub.stop()
    assert code == 0, err

    # Restart: the published bundle is still active. (A new sensor id: the hub remembers the
    # sequence numbers it scored, and this spool-less sender would start again at 1.)
    hub = hub_helpers.HubProcess(threatseer_cmd, config)
    sender = hub_helpers.Sender(ctx, cfg["ingest"]["endpoint"], "sensor-hot-after-restart")
    sub = hub_helpers.Subscriber(ctx, cfg["publish"]["endpoint"])
    try:
        hub_helpers.wait_connected(sender, sub)
        sender.send([hub_helpers.exec_event("/usr/bin/x", ["x", "hot-reload-marker", "restart"])])
        got = sub.collect(1, 10)
        assert got and "hot_reload_marker" in fired(got[0][1])
        r = rules("rollback")
        assert r.returncode == 0 and "1.0.0" in r.stdout, r.stderr
        sender.send([hub_helpers.exec_event("/usr/bin/x", ["x", "hot-reload-marker", "rb"])])
        got = sub.collect(1, 10)
        assert got and "hot_reload_marker" not in fired(got[0][1])
    finally:
        sub.close()
        sender.close()
        hub.stop()
