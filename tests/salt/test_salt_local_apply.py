"""`salt-call --local` applies the formula into a test root, state by state.

The module shares one minion (its own config dir, root_dir and test root); the tests run in
file order: sensor (before and after the hub key exists), idempotence, a new wheelhouse, a
failing state, hub + rules (admin and config activation, each with a local rules layer),
clean.
"""

from __future__ import annotations

import shutil
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from salt_helpers import (
    THREATSEER,
    LocalMinion,
    build_bundle,
    build_local_layer,
    exited,
    hub_status,
    local_minion,
    state_changes,
    state_failures,
    stop_leftovers,
    wait_for,
)

pytestmark = pytest.mark.timeout(600)
MINION = "ts-local"
# CAP_DAC_READ_SEARCH, CAP_SYS_PTRACE, CAP_SYS_RESOURCE, CAP_PERFMON, CAP_BPF.
SENSOR_CAPS = (1 << 2) | (1 << 19) | (1 << 24) | (1 << 38) | (1 << 39)


@pytest.fixture(scope="module")
def minion(wheelhouse: Path, signing_key: Path) -> Iterator[LocalMinion]:
    base = Path(tempfile.mkdtemp(prefix="ts-salt-local-"))
    root = base / "root"
    try:
        yield local_minion(base, root, MINION, wheelhouse, signing_key)
    finally:
        stop_leftovers(root)
        shutil.rmtree(base, ignore_errors=True)


def test_a_sensor_before_any_hub_key_fails_clearly(minion: LocalMinion) -> None:
    rc, ret, _ = minion.apply("threatseer.sensor")
    assert rc != 0
    failed = state_failures(ret)
    assert any(f.startswith("threatseer-sensor-hub-key-missing: no valid hub public key in the mine")
               for f in failed), failed
    assert not (minion.root / "etc/threatseer/sensor.yaml").exists()
    assert not (minion.root / "run/threatseer/threatseer-sensor.pid").exists()


def test_sensor_state_installs_configures_and_starts_a_confined_sensor(
        minion: LocalMinion) -> None:
    rc, ret, err = minion.apply("threatseer.keys.hub")
    assert rc == 0 and not state_failures(ret), state_failures(ret) or err[-2000:]
    rc, ret, err = minion.apply("threatseer.sensor")
    assert rc == 0 and not state_failures(ret), state_failures(ret) or err[-2000:]
    root = minion.root
    keys = root / "etc/threatseer/keys"
    venv_py = root / "opt/threatseer/venv/bin/python"
    probe = subprocess.run([str(venv_py), "-c", "import threatseer.native, "
                            "threatseer.sensor.daemon, importlib.metadata as m; "
                            "print(m.version('threatseer'))"], capture_output=True, text=True)
    assert probe.returncode == 0 and probe.stdout.strip() == "0.1.0", probe.stderr
    assert list((root / "opt/threatseer/wheels").glob("threatseer-*.whl"))

    config = yaml.safe_load((root / "etc/threatseer/sensor.yaml").read_text())
    hub = minion.data["threatseer"]["sensor"]["config"]["hub"]
    assert config == {"hub": hub, "sensor_id": MINION, "health_interval_s": 1.0,
                      "sensitive_paths": ["/etc/shadow", f"{root}/watched/"],
                      "state_dir": f"{root}/var/lib/threatseer/sensor",
                      "curve_secret_key_file": f"{keys}/sensor.key",
                      "curve_public_key_file": f"{keys}/sensor.key.pub",
                      "curve_server_key": (keys / "hub.key.pub").read_text().strip()}

    secret = root / "etc/threatseer/keys/sensor.key"
    public = root / "etc/threatseer/keys/sensor.key.pub"
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    assert len(public.read_text().strip()) == 40  # Z85 of a 32-byte CURVE key
    mined = minion.call("mine.get", MINION, "threatseer_sensor_pubkey")
    assert mined == {MINION: public.read_text()}

    unit = (root / "etc/systemd/system/threatseer-sensor.service").read_text()
    for line in ("CapabilityBoundingSet=CAP_BPF CAP_PERFMON CAP_SYS_RESOURCE CAP_SYS_PTRACE "
                 "CAP_DAC_READ_SEARCH", "NoNewPrivileges=yes", "ProtectSystem=strict",
                 f"ReadWritePaths={root}/var/lib/threatseer/sensor {root}/var/log/threatseer",
                 f"ExecStart={root}/opt/threatseer/venv/bin/threatseer sensor -c "
                 f"{root}/etc/threatseer/sensor.yaml"):
        assert line in unit.splitlines(), line

    # The sensor runs (init script) with the eBPF capabilities only and no_new_privs.
    assert minion.initd("threatseer-sensor", "status").returncode == 0
    status = Path(f"/proc/{minion.pid('threatseer-sensor')}/status").read_text()
    fields = dict(line.split(":\t", 1) for line in status.splitlines() if ":\t" in line)
    assert int(fields["CapBnd"], 16) & ~SENSOR_CAPS == 0, fields["CapBnd"]
    assert fields["NoNewPrivs"].strip() == "1"
    log = root / "var/log/threatseer/threatseer-sensor.log"
    wait_for(lambda: "running" in log.read_text(), 20, "the sensor's start line")
    # attached: CAP_BPF, CAP_PERFMON and CAP_SYS_RESOURCE are given up (docs/security.md)
    status = Path(f"/proc/{minion.pid('threatseer-sensor')}/status").read_text()
    fields = dict(line.split(":\t", 1) for line in status.splitlines() if ":\t" in line)
    assert int(fields["CapEff"], 16) == (1 << 2) | (1 << 19), fields["CapEff"]


def test_second_apply_reports_zero_changes(minion: LocalMinion) -> None:
    pid = minion.pid("threatseer-sensor")
    rc, ret, _ = minion.apply("threatseer.sensor")
    assert rc == 0 and not state_failures(ret)
    assert state_changes(ret) == []
    assert minion.pid("threatseer-sensor") == pid  # not restarted


def test_a_changed_wheelhouse_reinstalls_and_restarts_the_sensor(minion: LocalMinion) -> None:
    pid = minion.pid("threatseer-sensor")
    extra = minion.bundles.parent / "files" / "zz_extra-0.0.1-py3-none-any.whl"
    extra.write_bytes(b"not needed by threatseer, only new on the master")
    try:
        rc, ret, _ = minion.apply("threatseer.sensor")
    finally:
        extra.unlink()
    assert rc == 0 and not state_failures(ret), state_failures(ret)
    assert state_changes(ret) == ["threatseer-package", "threatseer-sensor-restart",
                                  "threatseer-wheelhouse"]
    assert minion.pid("threatseer-sensor") != pid
    rc, ret, _ = minion.apply("threatseer.sensor")  # the extra wheel is gone again
    assert rc == 0 and "threatseer-package" in state_changes(ret)


def test_a_bad_config_fails_the_apply_and_keeps_the_running_one(minion: LocalMinion) -> None:
    config = minion.root / "etc/threatseer/sensor.yaml"
    before, pid = config.read_text(), minion.pid("threatseer-sensor")
    rc, ret, _ = minion.apply("threatseer.config.sensor",
                              {"threatseer": {"sensor": {"config": {"batch_size": 0}}}})
    assert rc != 0
    failed = state_failures(ret)
    assert len(failed) == 1 and failed[0].startswith("threatseer-sensor-config:"), failed
    assert "batch_size" in failed[0]
    assert config.read_text() == before
    assert minion.pid("threatseer-sensor") == pid
    assert minion.initd("threatseer-sensor", "status").returncode == 0


def test_hub_and_rules_states_run_the_hub_with_the_pinned_bundle(minion: LocalMinion) -> None:
    rc, ret, err = minion.apply("threatseer.hub,threatseer.rules")
    assert rc == 0 and not state_failures(ret), state_failures(ret) or err[-2000:]
    root = minion.root
    allow = (root / "etc/threatseer/sensors.allow").read_text()
    sensor_key = (root / "etc/threatseer/keys/sensor.key.pub").read_text().strip()
    assert f"{sensor_key}  # {MINION}" in allow.splitlines()
    hub_cfg = yaml.safe_load((root / "etc/threatseer/hub.yaml").read_text())
    assert hub_cfg["admin"]["admin_keys"] == [f"{root}/etc/threatseer/keys/admin.key.pub"]
    assert hub_cfg["curve_allow_list"] == f"{root}/etc/threatseer/sensors.allow"
    assert "plaintext" not in hub_cfg
    # The local sensor's events reach the local hub, which runs the pinned bundle.
    status = wait_for(lambda: (s := hub_status(root)) and s["bundle"]["version"] == "1.0.0"
                      and s["sensors"].get(MINION, {}).get("events_in", 0) > 0 and s,
                      30, "the hub to show the sensor and bundle 1.0.0")
    assert status["bundle"]["name"] == "default"

    rc, ret, _ = minion.apply("threatseer.hub,threatseer.rules")
    assert rc == 0 and state_changes(ret) == []


def test_a_local_layer_stacks_on_the_pinned_bundle_through_the_admin_endpoint(
        minion: LocalMinion, signing_key: Path) -> None:
    build_local_layer(minion.base / "work", "1", signing_key, minion.bundles)
    pinned = {"threatseer": {"rules": {"local": {"version": "1"}}}}
    rc, ret, err = minion.apply("threatseer.rules", pinned)
    assert rc == 0 and not state_failures(ret), state_failures(ret) or err[-2000:]
    assert state_changes(ret) == ["threatseer-rules-local-active",
                                  "threatseer-rules-local-bundle",
                                  "threatseer-rules-local-verified"]
    status = wait_for(lambda: (s := hub_status(minion.root)) and (s["bundle"].get("local") or {}
                                                                  ).get("version") == "1" and s,
                      30, "the hub to run the local layer on bundle 1.0.0")
    assert status["bundle"]["version"] == "1.0.0" and status["bundle"]["rules"] == 1
    assert status["bundle"]["local"]["name"] == "local"
    listing = subprocess.run(
        [THREATSEER, "rules", "list", "--hub", minion.data["threatseer"]["rules"]
         ["admin_endpoint"], "-k", str(minion.root / "etc/threatseer/keys/admin.key")],
        capture_output=True, text=True, timeout=60)  # listing needs the admin key too
    assert "* 1.0.0 " in listing.stdout and "* local 1 " in listing.stdout, listing.stdout
    rc, ret, _ = minion.apply("threatseer.rules", pinned)
    assert rc == 0 and state_changes(ret) == []
    # Unpinned: the layer comes off (and stays installed), once.
    rc, ret, _ = minion.apply("threatseer.rules")
    assert rc == 0 and state_changes(ret) == ["threatseer-rules-local-off"], state_failures(ret)
    wait_for(lambda: (s := hub_status(minion.root)) and s["bundle"].get("local") is None
             and s["bundle"]["rules"] == 0, 30, "the hub to run bundle 1.0.0 alone")
    rc, ret, _ = minion.apply("threatseer.rules")
    assert rc == 0 and state_changes(ret) == []


def test_config_activation_links_the_bundle_and_restarts_the_hub(
        minion: LocalMinion, signing_key: Path) -> None:
    pid = minion.pid("threatseer-hub")
    build_bundle(minion.base / "work", "1.1.0", signing_key, minion.bundles)
    mode = {"threatseer": {"rules": {"activate": "config", "version": "1.1.0"}}}
    rc, ret, err = minion.apply("threatseer.rules", mode)
    assert rc == 0 and not state_failures(ret), state_failures(ret) or err[-2000:]
    link = minion.root / "var/lib/threatseer/rules/active.tar.gz"
    assert link.resolve() == minion.root / "var/lib/threatseer/rules/default-1.1.0.tar.gz"
    hub_cfg = yaml.safe_load((minion.root / "etc/threatseer/hub.yaml").read_text())
    assert hub_cfg["bundle"] == str(link) and "endpoint" not in hub_cfg["admin"]
    # the hub verifies the linked bundle itself, with the formula's signing key
    assert hub_cfg["admin"] == {
        "trusted_signing_keys": [f"{minion.root}/etc/threatseer/bundle-signing.pub"]}
    assert minion.pid("threatseer-hub") != pid
    wait_for(lambda: (s := hub_status(minion.root)) and s["pid"] != pid
             and s["bundle"]["version"] == "1.1.0", 30, "the restarted hub on bundle 1.1.0")
    rc, ret, _ = minion.apply("threatseer.rules", mode)
    assert rc == 0 and state_changes(ret) == []
    # Rollback in config mode: only the link moves (hub.yaml stays), and that restarts the hub.
    pid = minion.pid("threatseer-hub")
    mode["threatseer"]["rules"]["version"] = "1.0.0"
    rc, ret, _ = minion.apply("threatseer.rules", mode)
    assert rc == 0 and not state_failures(ret), state_failures(ret)
    assert state_changes(ret) == ["threatseer-hub-restart", "threatseer-rules-active"]
    wait_for(lambda: (s := hub_status(minion.root)) and s["pid"] != pid
             and s["bundle"]["version"] == "1.0.0", 30, "the restarted hub on bundle 1.0.0")


def test_config_activation_stacks_the_local_layer_at_start(minion: LocalMinion) -> None:
    pid = minion.pid("threatseer-hub")
    mode = {"threatseer": {"rules": {"activate": "config", "version": "1.0.0",
                                     "local": {"version": "1"}}}}
    rc, ret, err = minion.apply("threatseer.rules", mode)
    assert rc == 0 and not state_failures(ret), state_failures(ret) or err[-2000:]
    link = minion.root / "var/lib/threatseer/rules/active-local.tar.gz"
    assert link.resolve() == minion.root / "var/lib/threatseer/rules/local-1.tar.gz"
    hub_cfg = yaml.safe_load((minion.root / "etc/threatseer/hub.yaml").read_text())
    assert hub_cfg["local_bundle"] == str(link)
    wait_for(lambda: (s := hub_status(minion.root)) and s["pid"] != pid
             and (s["bundle"].get("local") or {}).get("version") == "1", 30,
             "the restarted hub on bundle 1.0.0 + local 1")
    rc, ret, _ = minion.apply("threatseer.rules", mode)
    assert rc == 0 and state_changes(ret) == []
    # Unpinned: the link goes, hub.yaml loses local_bundle, the hub restarts without it.
    pid = minion.pid("threatseer-hub")
    del mode["threatseer"]["rules"]["local"]
    rc, ret, _ = minion.apply("threatseer.hub,threatseer.rules", mode)
    assert rc == 0 and not state_failures(ret), state_failures(ret)
    assert not link.is_symlink()
    assert "local_bundle" not in yaml.safe_load(
        (minion.root / "etc/threatseer/hub.yaml").read_text())
    wait_for(lambda: (s := hub_status(minion.root)) and s["pid"] != pid
             and s["bundle"].get("local") is None, 30, "the restarted hub without the layer")


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="needs systemd-analyze")
def test_the_installed_systemd_units_pass_systemd_analyze_verify(minion: LocalMinion) -> None:
    units = sorted((minion.root / "etc/systemd/system").glob("threatseer-*.service"))
    assert [u.name for u in units] == ["threatseer-hub.service", "threatseer-sensor.service"]
    for unit in units:
        proc = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True,
                              text=True)
        assert proc.returncode == 0 and unit.name not in proc.stderr, proc.stderr
    hub = (minion.root / "etc/systemd/system/threatseer-hub.service").read_text().splitlines()
    assert "CapabilityBoundingSet=" in hub and "MemoryDenyWriteExecute=yes" in hub


def test_clean_removes_everything_the_formula_installed(minion: LocalMinion) -> None:
    pids = [minion.pid("threatseer-sensor"), minion.pid("threatseer-hub")]
    rc, ret, _ = minion.apply("threatseer.clean")
    assert rc == 0 and not state_failures(ret), state_failures(ret)
    for pid in pids:
        wait_for(lambda pid=pid: exited(pid), 10, f"pid {pid} to exit")
    left = sorted(str(p.relative_to(minion.root)) for p in minion.root.rglob("*")
                  if p.is_file() or p.is_symlink())
    assert left == []
    for d in ("opt/threatseer", "etc/threatseer", "var/lib/threatseer", "var/log/threatseer",
              "run/threatseer"):
        assert not (minion.root / d).exists(), d
    assert minion.call("mine.get", MINION, "threatseer_sensor_pubkey") == {}
    rc, ret, _ = minion.apply("threatseer.clean")
    assert rc == 0 and state_changes(ret) == []
