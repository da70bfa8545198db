"""A salt-master and two minions on 127.0.0.1 roll out sensors, a hub and rule bundles.

Both minions run on this machine, each with its own config dir, root_dir and test root (so
two sensors share the kernel; each filters only itself). The tests run in file order.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from salt_helpers import (
    BIN,
    STATES,
    base_pillar,
    build_bundle,
    hub_status,
    make_file_root,
    run_json,
    start_daemon,
    state_changes,
    state_failures,
    stop_daemon,
    stop_leftovers,
    wait_for,
    write_pillar,
)

from tests.conftest import free_port

pytestmark = pytest.mark.timeout(900)
SENSOR, HUB = "ts-fleet-sensor", "ts-fleet-hub"


@dataclass
class Fleet:
    base: Path
    master_conf: Path
    pillar: Path
    bundles: Path
    signing_key: Path
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def root(self, minion: str) -> Path:
        return self.base / "roots" / minion

    def salt(self, target: str, *args: str, timeout: float = 400) -> tuple[int, Any, str]:
        return run_json([str(BIN / "salt"), "-c", str(self.master_conf), "--out=json",
                         "-t", str(int(timeout)), target, *args],
                        timeout=timeout + 30)

    def apply(self, target: str, sls: str) -> tuple[int, dict[str, Any], str]:
        rc, out, err = self.salt(target, "state.apply", sls)
        assert isinstance(out, dict), f"rc={rc}: {out}\n{err[-3000:]}"
        return rc, out, err

    def pin_rules(self, version: str) -> None:
        write_pillar(self.pillar, {"threatseer": {"rules": {"version": version}}}, "rules")


@pytest.fixture(scope="module")
def fleet(wheelhouse: Path, signing_key: Path) -> Iterator[Fleet]:
    base = Path(tempfile.mkdtemp(prefix="ts-salt-fleet-"))
    f = Fleet(base, base / "master-conf", base / "pillar", Path(), signing_key)
    try:
        _setup(f, wheelhouse)
        yield f
    finally:
        if f.procs:
            f.salt("*", "state.apply", "threatseer.clean", timeout=120)
        stop_leftovers(f.root(SENSOR), f.root(HUB))
        for proc in reversed(f.procs):
            stop_daemon(proc)
        shutil.rmtree(base, ignore_errors=True)


def _setup(f: Fleet, wheelhouse: Path) -> None:
    file_root = make_file_root(f.base, wheelhouse)
    f.bundles = file_root / "threatseer" / "bundles"
    build_bundle(f.base / "work", "1.0.0", f.signing_key, f.bundles)
    ports = {"ingest": free_port(), "publish": free_port(), "admin": free_port()}
    pub = Path(f"{f.signing_key}.pub").read_text().strip()
    # One test root per minion: the pillar is rendered per minion.
    data = base_pillar(Path(f"{f.base}/roots/{{{{ grains.id }}}}"), ports, pub)
    # mine_functions in pillar too: a periodic mine.update keeps the keys fresh.
    data["mine_functions"] = {
        f"threatseer_{role}_pubkey": [{"mine_function": "file.read"},
                                      f"{data['threatseer']['root']}/etc/threatseer/keys/{role}.key.pub"]
        for role in ("sensor", "hub")}
    write_pillar(f.pillar, data)
    f.pin_rules("1.0.0")
    (f.pillar / "top.sls").write_text("base:\n  '*':\n    - threatseer\n    - rules\n")
    publish_port, ret_port = free_port(), free_port()
    f.master_conf.mkdir()
    (f.master_conf / "master").write_text(yaml.safe_dump({
        "interface": "127.0.0.1", "publish_port": publish_port, "ret_port": ret_port,
        "root_dir": str(f.base / "master"), "auto_accept": True, "worker_threads": 3,
        "file_roots": {"base": [str(STATES), str(file_root)]},
        "pillar_roots": {"base": [str(f.pillar)]},
    }))
    f.procs.append(start_daemon([str(BIN / "salt-master"), "-c", str(f.master_conf), "-l", "warning"],
                          f.base / "master.log"))
    for minion in (SENSOR, HUB):
        conf = f.base / f"{minion}-conf"
        conf.mkdir()
        (conf / "minion").write_text(yaml.safe_dump({
            "id": minion, "master": "127.0.0.1", "master_port": ret_port,
            "root_dir": str(f.base / minion), "acceptance_wait_time": 1,
            "disable_modules": ["systemd_service"],
        }))
        f.procs.append(start_daemon([str(BIN / "salt-minion"), "-c", str(conf), "-l", "warning"],
                              f.base / f"{minion}.log"))

    def both_up() -> bool:
        rc, out, _ = f.salt("*", "test.ping", timeout=5)
        return isinstance(out, dict) and out.get(SENSOR) is True and out.get(HUB) is True

    wait_for(both_up, 90, "both minions to answer test.ping", interval=1)


def _ok(rc: int, out: dict[str, Any], minions: tuple[str, ...], err: str) -> None:
    assert set(out) == set(minions), out
    failures = {m: state_failures(out[m]) for m in minions}
    assert not any(failures.values()), failures
    assert rc == 0, err[-2000:]


def test_sensors_roll_out_to_every_minion(fleet: Fleet) -> None:
    # The hub's CURVE key first: the sensors' config needs it from the mine.
    rc, out, err = fleet.apply(HUB, "threatseer.keys.hub")
    _ok(rc, out, (HUB,), err)
    rc, out, err = fleet.apply("*", "threatseer.sensor")
    _ok(rc, out, (SENSOR, HUB), err)
    for minion in (SENSOR, HUB):
        root = fleet.root(minion)
        cfg = yaml.safe_load((root / "etc/threatseer/sensor.yaml").read_text())
        assert cfg["sensor_id"] == minion
        pid = int((root / "run/threatseer/threatseer-sensor.pid").read_text())
        assert str(root).encode() in Path(f"/proc/{pid}/cmdline").read_bytes()
    # Each sensor's public key is in the master's mine.
    rc, mined, _ = fleet.salt(HUB, "mine.get", "*", "threatseer_sensor_pubkey")
    keys = {m: (fleet.root(m) / "etc/threatseer/keys/sensor.key.pub").read_text()
            for m in (SENSOR, HUB)}
    assert mined[HUB] == keys
    # ... and stay there after a mine.update from the pillar's mine_functions.
    rc, _, _ = fleet.salt("*", "mine.update")
    rc, mined, _ = fleet.salt(HUB, "mine.get", "*", "threatseer_sensor_pubkey")
    assert mined[HUB] == keys


def test_hub_gets_the_mine_allow_list_and_both_sensors_events(fleet: Fleet) -> None:
    rc, out, err = fleet.apply(HUB, "threatseer.hub,threatseer.rules")
    _ok(rc, out, (HUB,), err)
    root = fleet.root(HUB)
    allow = (root / "etc/threatseer/sensors.allow").read_text().splitlines()
    for minion in (SENSOR, HUB):
        key = (fleet.root(minion) / "etc/threatseer/keys/sensor.key.pub").read_text().strip()
        assert f"{key}  # {minion}" in allow
    assert not (fleet.root(SENSOR) / "etc/threatseer/hub.yaml").exists()
    # Each role installs what it needs: the hub's libraries only on the hub.
    for minion, has_hub_extra in ((SENSOR, False), (HUB, True)):
        python = fleet.root(minion) / "opt/threatseer/venv/bin/python"
        check = subprocess.run([str(python), "-m", "threatseer.cli.extras", "hub"],
                               capture_output=True, text=True)
        assert (check.returncode == 0) == has_hub_extra, (minion, check.stdout)

    def both_sensors() -> dict[str, Any] | None:
        s = hub_status(root)
        ok = s and all(s["sensors"].get(m, {}).get("events_in", 0) > 0 for m in (SENSOR, HUB))
        return s if ok and s["bundle"]["version"] == "1.0.0" else None

    status = wait_for(both_sensors, 60, "events of both sensors and bundle 1.0.0 at the hub")
    assert status["bundle"]["name"] == "default"


def _active(root: Path, version: str) -> dict[str, Any] | None:
    s = hub_status(root)
    return s if s and s["bundle"]["version"] == version else None


def test_a_new_bundle_and_a_rollback_are_one_pillar_change_and_one_apply(fleet: Fleet) -> None:
    root = fleet.root(HUB)
    hub_pid = int((root / "run/threatseer/threatseer-hub.pid").read_text())
    build_bundle(fleet.base / "work", "1.1.0", fleet.signing_key, fleet.bundles)
    fleet.pin_rules("1.1.0")
    rc, out, err = fleet.apply(HUB, "threatseer.rules")
    _ok(rc, out, (HUB,), err)
    assert "threatseer-rules-active" in state_changes(out[HUB])
    status = wait_for(lambda: _active(root, "1.1.0"), 20, "bundle 1.1.0 active")
    assert status["pid"] == hub_pid  # hot reload, no restart

    fleet.pin_rules("1.0.0")
    rc, out, err = fleet.apply(HUB, "threatseer.rules")
    _ok(rc, out, (HUB,), err)
    wait_for(lambda: _active(root, "1.0.0"), 20, "rollback to 1.0.0")
    rc, out, err = fleet.apply(HUB, "threatseer.rules")
    _ok(rc, out, (HUB,), err)
    assert state_changes(out[HUB]) == []


def test_a_bundle_with_a_bad_signature_fails_the_apply_and_changes_nothing(
        fleet: Fleet) -> None:
    root = fleet.root(HUB)
    other = fleet.base / "other.key"
    subprocess.run([str(BIN / "threatseer"), "keys", "gen", "--type", "signing", "-o",
                    str(other)], check=True, capture_output=True)
    build_bundle(fleet.base / "work", "6.6.6", other, fleet.bundles)
    fleet.pin_rules("6.6.6")
    rc, out, _ = fleet.apply(HUB, "threatseer.rules")
    assert rc != 0
    failed = state_failures(out[HUB])
    assert any(f.startswith("threatseer-rules-verified:") for f in failed), failed
    time.sleep(2.5)  # a status cycle
    assert _active(root, "1.0.0")
    fleet.pin_rules("1.0.0")


def test_a_second_rollout_changes_nothing(fleet: Fleet) -> None:
    rc, out, err = fleet.apply("*", "threatseer.sensor")
    _ok(rc, out, (SENSOR, HUB), err)
    assert {m: state_changes(out[m]) for m in out} == {SENSOR: [], HUB: []}
