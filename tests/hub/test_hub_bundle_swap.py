"""Rule bundles in the running hub: atomic hot swap between batches, admin publish/rollback
through the rules engineer's admin endpoint, and the active bundle surviving a restart."""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

import yaml
from hub_helpers import Sender, Subscriber, endpoint, exec_event, wait_connected
from nacl.signing import SigningKey

from threatseer.hub.rules.admin import AdminClient
from threatseer.hub.rules.archive import build_archive, read_dir
from threatseer.hub.rules.model import Bundle, Manifest, RiskyProcess, StaticData
from threatseer.hub.rules.signing import b64

ROOT = Path(__file__).resolve().parents[2]


def nc_bundle(version: str, score: int) -> Bundle:
    return Bundle(Manifest("swap", version), StaticData(
        risky_processes={"nc": RiskyProcess("nc", "netcat", score)}))


def test_hot_swap_is_atomic_between_batches_and_drops_nothing(start_hub, zctx) -> None:
    hub = start_hub(bundle_obj=nc_bundle("1", 10))
    sub = Subscriber(zctx, hub.publisher.endpoint, topics=("event.process.exec",))
    sender = Sender(zctx, hub.ingest.endpoint, "swap")
    wait_connected(sender, Subscriber(zctx, hub.publisher.endpoint))
    n_batches, per = 300, 20

    def send() -> None:
        for _ in range(n_batches):
            sender.send([exec_event("/usr/bin/nc", ["nc", "x"]) for _ in range(per)])
            time.sleep(0.001)

    t = threading.Thread(target=send)
    t.start()
    time.sleep(0.1)
    hub.activate(nc_bundle("2", 20))  # both below alert_at: one topic
    t.join()
    got = sub.collect(n_batches * per, timeout_s=30)
    assert len(got) == n_batches * per
    by_seq: dict[int, set[int]] = {}
    for _t, ev in got:
        by_seq.setdefault(ev["threatseer.batch.seq"], set()).add(ev["event.risk_score"])
    assert all(len(scores) == 1 for scores in by_seq.values())  # never a half-swapped batch
    order = [next(iter(by_seq[s])) for s in sorted(by_seq)]
    assert set(order) == {10, 20}
    switch = order.index(20)
    assert order[switch:] == [20] * (len(order) - switch)  # and never back


def test_admin_publish_rollback_and_active_bundle_survives_restart(
        start_hub, zctx, tmp_path) -> None:
    src = tmp_path / "bundle"
    shutil.copytree(ROOT / "rules" / "default", src)
    admin_key = SigningKey.generate()
    admin = {"endpoint": endpoint(), "admin_keys": [b64(bytes(admin_key.verify_key))],
             "allow_unsigned": True}

    def nc_score(hub) -> int:  # type: ignore[no-untyped-def]
        sub = Subscriber(zctx, hub.publisher.endpoint,
                         topics=("event.process.exec", "alert.process.exec"))
        sender = Sender(zctx, hub.ingest.endpoint, "adm")
        wait_connected(sender, Subscriber(zctx, hub.publisher.endpoint))
        sender.send([exec_event("/usr/bin/nc", ["nc", "host", "80"])])
        (_t, ev), = sub.collect(1)
        return next(i["score"] for i in ev["threatseer.indicators"]
                    if i["rule"] == "risky_process:nc")

    from threatseer.hub.config import AdminConfig

    static_doc = yaml.safe_load((src / "static.yaml").read_text())
    shipped = next(p["score"] for p in static_doc["risky_processes"] if p["name"] == "nc")
    hub = start_hub(admin=AdminConfig(**admin), bundle=str(src))
    assert hub.pipeline.rules.bundle.manifest.version == "1.0.0"
    assert nc_score(hub) == shipped

    manifest = yaml.safe_load((src / "manifest.yaml").read_text())
    manifest["version"] = "1.0.1"
    (src / "manifest.yaml").write_text(yaml.safe_dump(manifest))
    static = (src / "static.yaml").read_text()
    (src / "static.yaml").write_text(static.replace(
        f"{{name: nc, reason: reverse shell, score: {shipped}",
        "{name: nc, reason: reverse shell, score: 77"))
    client = AdminClient(admin["endpoint"], admin_key, context=zctx)
    client.publish(build_archive(read_dir(src)))
    assert hub.pipeline.rules.bundle.manifest.version == "1.0.1"
    assert nc_score(hub) == 77
    hub.stop()

    hub = start_hub(admin=AdminConfig(**admin))  # no bundle: in config: the store's active one
    assert hub.pipeline.rules.bundle.manifest.version == "1.0.1"
    assert nc_score(hub) == 77
    AdminClient(admin["endpoint"], admin_key, context=zctx).rollback()
    assert hub.pipeline.rules.bundle.manifest.version == "1.0.0"
    assert nc_score(hub) == shipped


def test_a_hub_without_a_loadable_bundle_says_so_in_status_and_metrics(
        start_hub, tmp_path) -> None:
    """A refused bundle with none installed leaves the hub scoring with no rules: that must
    show where operators look (status.json, `threatseer status`, a gauge), not only in one
    log line at start; activating a good bundle clears it."""
    import json

    from click.testing import CliRunner

    from threatseer.hub.cli import status_command
    from threatseer.hub.daemon import STATUS_FILE

    src = tmp_path / "unsigned"
    shutil.copytree(ROOT / "rules" / "default", src)  # unsigned: refused without allow_unsigned
    hub = start_hub(bundle=str(src))
    assert hub.pipeline.rules.bundle.manifest.name == "none"
    assert hub.bundle_problems and str(src) in hub.bundle_problems[0]
    assert hub.metrics.rules._value.get() == 0
    assert hub.metrics.bundle_problems._value.get() == 1
    status_path = Path(hub.cfg.state_dir) / STATUS_FILE
    deadline = time.monotonic() + 10
    while not status_path.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    st = json.loads(status_path.read_text())
    assert st["bundle"]["rules"] == 0 and str(src) in st["bundle"]["problems"][0]

    out = CliRunner().invoke(status_command, ["--state-dir", hub.cfg.state_dir]).output
    assert "WARNING: cannot load bundle" in out and "no rules are active" in out

    hub.activate(nc_bundle("3", 10))
    assert hub.bundle_problems == [] and hub.metrics.bundle_problems._value.get() == 0
    assert hub.metrics.rules._value.get() == len(hub.pipeline.rules.bundle.ruleset)
