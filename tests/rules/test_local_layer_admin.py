"""Local layers through the admin endpoint: over real ZeroMQ sockets to a real store, and
through the real ``threatseer hub`` and ``threatseer rules`` processes (publish, list,
status, rollback --local, unstack), with events scored by the stack."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
import zmq
from nacl.signing import SigningKey
from rules_helpers import SIMPLE_RULES, write_bundle

from threatseer.common.keys import write_key_pair
from threatseer.hub.rules.admin import AdminClient, AdminError, AdminServer
from threatseer.hub.rules.archive import build_archive, read_dir
from threatseer.hub.rules.bundle import complete_event
from threatseer.hub.rules.signing import b64, sign_archive
from threatseer.hub.rules.store import BundleStore

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "hub"))
hub_helpers = pytest.importorskip("hub_helpers", reason="hub test helpers not available")

NGINX_SH = {"event.action": "exec", "process.name": "sh", "process.parent.name": "nginx",
            "host.name": "web9"}


def archive(root: Path, files: dict[str, str], version: str, key: SigningKey | None,
            local: bool = False, name: str = "test") -> bytes:
    src = write_bundle(root / f"src-{name}-{version}", files, version=version)
    if local:
        (src / "manifest.yaml").write_text(yaml.safe_dump(
            {"name": name, "version": version, "layer": "local", "base": "test"}))
    data = build_archive(read_dir(src))
    return sign_archive(data, key) if key is not None else data


def layer_text(score: int) -> dict[str, str]:
    """A local layer re-scoring shell_from_web."""
    return {"rules/site.yaml": f"""\
rules:
  - rule: shell_from_web
    score: {score}
    override: {{score: replace}}
"""}


EXCEPT_WEB9 = """\
  - rule: shell_from_web
    override: {exceptions: append}
    exceptions: [{name: web9, fields: host.name, values: [web9]}]
"""


def scores(bundle) -> dict[str, int]:  # type: ignore[no-untyped-def]
    return {r.name: r.score for r in bundle.ruleset.matching_rules(complete_event(NGINX_SH))}


@pytest.fixture
def admin(tmp_path: Path, port: int):
    signing, admin_key = SigningKey.generate(), SigningKey.generate()
    activated: list = []
    store = BundleStore(tmp_path / "state", trusted_keys=[signing.verify_key])
    server = AdminServer(store, f"tcp://127.0.0.1:{port}", [admin_key.verify_key],
                         activated.append)
    server.start()
    try:
        yield AdminClient(f"tcp://127.0.0.1:{port}", admin_key, timeout=30), signing, \
            activated, store
    finally:
        server.stop()


def test_a_local_layer_stacks_rolls_back_and_unstacks_through_the_endpoint(
        admin, tmp_path: Path) -> None:
    client, signing, activated, store = admin
    base = {"rules/main.yaml": SIMPLE_RULES}
    with pytest.raises(AdminError, match="a local layer needs an active base bundle"):
        client.publish(archive(tmp_path, layer_text(1), "1", signing, local=True))
    client.publish(archive(tmp_path, base, "1.0.0", signing))
    assert scores(activated[-1]) == {"shell_from_web": 70}

    reply = client.publish(archive(tmp_path, layer_text(5), "1", signing, local=True))
    assert reply["active"]["local"]["version"] == "1" and reply["active"]["version"] == "1.0.0"
    assert scores(activated[-1]) == {"shell_from_web": 5}
    assert activated[-1].local.manifest.name == "test"
    client.publish(archive(tmp_path, {"rules/site.yaml": "rules:\n" + EXCEPT_WEB9}, "2",
                           signing, local=True))
    assert scores(activated[-1]) == {}  # web9 excepted, score back to the base's
    listing = client.list()
    assert listing["active"] == "1.0.0" and listing["active_local"] == "2"
    assert [(i["layer"], i["version"], i["active"]) for i in listing["installed"]] == [
        ("base", "1.0.0", True), ("local", "1", False), ("local", "2", True)]

    # A base the active layer does not apply to (its rule is gone) is refused; nothing moves.
    with pytest.raises(AdminError, match="the active local layer 2 does not apply"):
        client.publish(archive(tmp_path, {"rules/main.yaml": "rules: []\n"}, "2.0.0", signing))
    # A base that takes the layer is stacked under it.
    client.publish(archive(tmp_path, {"rules/main.yaml": SIMPLE_RULES.replace(
        "score: 70", "score: 71")}, "1.1.0", signing))
    assert activated[-1].describe() == "test 1.1.0 + local test 2"

    assert client.rollback(local=True)["active"]["local"]["version"] == "1"
    assert scores(activated[-1]) == {"shell_from_web": 5}
    reply = client.unstack()
    assert reply["active"]["local"] is None and scores(activated[-1]) == {"shell_from_web": 71}
    with pytest.raises(AdminError, match="no local layer is active"):
        client.unstack()
    assert client.rollback("2", local=True)["active"]["local"]["version"] == "2"

    # Unsigned and badly written layers are refused with the reason; the stack stays.
    with pytest.raises(AdminError, match="not signed"):
        client.publish(archive(tmp_path, layer_text(9), "3", None, local=True))
    with pytest.raises(AdminError, match="site.yaml:2: rule 'no_such': no such rule"):
        client.publish(archive(tmp_path, {"rules/site.yaml": "rules:\n  - rule: no_such\n"
                                          "    enabled: false\n"}, "4", signing, local=True))
    with pytest.raises(AdminError, match="not authorized"):
        AdminClient(client.endpoint, None, timeout=30).unstack()
    assert client.list()["active_local"] == "2"

    # A restart loads the stack from disk.
    again = BundleStore(store.dir, trusted_keys=[signing.verify_key]).active()
    assert again is not None and again.describe() == "test 1.1.0 + local test 2"
    assert scores(again) == {}


def test_hub_process_runs_the_stack_published_with_the_cli(tmp_path: Path,
                                                           threatseer_cmd: list[str]) -> None:
    """The real hub and CLI: publish a base and a local layer, see events scored by the stack,
    `rules list` and `status` showing it, `rules unstack` taking it off."""
    signing, admin_key = SigningKey.generate(), SigningKey.generate()
    write_key_pair(tmp_path / "admin.key", b64(bytes(admin_key)),
                   b64(bytes(admin_key.verify_key)))
    admin_ep = hub_helpers.endpoint()
    cfg = {
        "ingest": {"endpoint": hub_helpers.endpoint()},
        "publish": {"endpoint": hub_helpers.endpoint()},
        "metrics": {"listen": f"127.0.0.1:{hub_helpers.free_port()}"},
        "actions": {"toss_below": -1000, "alert_at": 1000},
        "state_dir": str(tmp_path / "state"),
        "plaintext": True,
        "admin": {"endpoint": admin_ep, "admin_keys": [b64(bytes(admin_key.verify_key))],
                  "trusted_signing_keys": [b64(bytes(signing.verify_key))]},
    }
    config = hub_helpers.write_yaml(tmp_path / "hub.yaml", cfg)
    base = tmp_path / "base.tar.gz"
    base.write_bytes(archive(tmp_path, {"rules/main.yaml": SIMPLE_RULES}, "1.0.0", signing))
    layer = tmp_path / "site.tar.gz"
    layer.write_bytes(archive(tmp_path, layer_text(5), "7", signing, local=True, name="site"))

    def cli(*args: str | Path) -> subprocess.CompletedProcess:
        return subprocess.run([*threatseer_cmd, *map(str, args)], capture_output=True,
                              text=True, timeout=120)

    def rules(*args: str | Path) -> subprocess.CompletedProcess:
        return cli("rules", *args, "--hub", admin_ep, "-k", tmp_path / "admin.key")

    ctx = zmq.Context.instance()
    hub = hub_helpers.HubProcess(threatseer_cmd, config)
    sender = hub_helpers.Sender(ctx, cfg["ingest"]["endpoint"], "sensor-local")
    sub = hub_helpers.Subscriber(ctx, cfg["publish"]["endpoint"])

    def scored(tag: str) -> dict[str, int]:
        sender.send([hub_helpers.exec_event("/bin/sh", ["sh", tag], **{
            "process.name": "sh", "process.parent.name": "nginx"})])
        for _, ev in sub.collect(1, 10):
            if tag in ev.get("process.args", []):
                return {i["rule"]: i["score"] for i in ev["threatseer.indicators"]
                        if i["engine"] == "dynamic"}
        raise AssertionError(f"event {tag} not published")

    try:
        hub_helpers.wait_connected(sender, sub)
        r = rules("publish", base)
        assert r.returncode == 0, r.stderr
        assert scored("before") == {"shell_from_web": 70}
        r = rules("publish", layer)
        assert r.returncode == 0, r.stderr
        assert r.stdout.startswith("active: test 1.0.0 + local site 7 (1 rules, digest ")
        assert scored("stacked") == {"shell_from_web": 5}
        listing = rules("list")
        assert listing.returncode == 0, listing.stderr
        assert listing.stdout.splitlines()[0].startswith("* 1.0.0  ")
        assert listing.stdout.splitlines()[1].startswith("* local 7  ")
        assert listing.stdout.splitlines()[-1] == "stack: 1.0.0 + local 7"
        as_json = json.loads(rules("list", "--json").stdout)
        assert as_json["active"] == "1.0.0" and as_json["active_local"] == "7"
        deadline = time.monotonic() + 10  # the status file is rewritten every 2 s
        st = cli("status", "--state-dir", cfg["state_dir"])
        while "+ local site 7" not in st.stdout and time.monotonic() < deadline:
            time.sleep(0.25)
            st = cli("status", "--state-dir", cfg["state_dir"])
        assert "bundle test 1.0.0 + local site 7 (1 rules" in st.stdout, st.stdout
        r = rules("unstack")
        assert r.returncode == 0 and "+ local" not in r.stdout, r.stderr
        assert scored("unstacked") == {"shell_from_web": 70}
        r = rules("rollback", "--local")
        assert r.returncode == 0 and "+ local site 7" in r.stdout, r.stdout + r.stderr
        assert scored("again") == {"shell_from_web": 5}
    finally:
        sub.close()
        sender.close()
        code, _, err = hub.stop()
    assert code == 0, err
