"""Pillar `roles` moves a hub host from the embedded hub to the hub cluster roles and back.

One `salt-call --local` minion (its own config, root_dir and test root) and a real Kafka-protocol
broker (tansu): the embedded hub runs; the pillar then lists gateway, scorer and output-worker
with the broker's address, and one apply stops and removes the hub and runs the three roles
from hub.yaml (they join the cluster: their status is on the broker, the scorer runs the pinned
bundle announced by threatseer.rules); a second apply changes nothing; the pillar goes back and
the hub runs again. Bad pillars fail the apply with one clear line and change nothing; clean
leaves nothing (the cluster roles' own removal is the move back's). The tests run in file order.
"""

from __future__ import annotations

import shutil
import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from salt_helpers import (
    LocalMinion,
    exited,
    hub_status,
    local_minion,
    state_changes,
    state_failures,
    stop_leftovers,
    wait_for,
    write_pillar,
)

from tests.conftest import free_port
from tests.outputs.conftest import tansu_at

pytestmark = pytest.mark.timeout(600)
MINION = "ts-cluster"
CLUSTER = ["gateway", "scorer", "output-worker"]
SERVICES = {"hub": "threatseer-hub", "gateway": "threatseer-gateway",
            "scorer": "threatseer-scorer", "output-worker": "threatseer-output-worker"}


@pytest.fixture(scope="module")
def broker() -> Iterator[Any]:
    base = Path(tempfile.mkdtemp(prefix="ts-salt-kafka-"))
    server = tansu_at(free_port(), base).start()
    try:
        yield server
    finally:
        server.stop(signal.SIGKILL)
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def minion(wheelhouse: Path, signing_key: Path) -> Iterator[LocalMinion]:
    base = Path(tempfile.mkdtemp(prefix="ts-salt-cluster-"))
    root = base / "root"
    try:
        m = local_minion(base, root, MINION, wheelhouse, signing_key)
        # A one-broker lab cluster; each role's /metrics on a free port (not the defaults,
        # which other processes on this host may hold).
        m.data["threatseer"]["hub"]["config"]["cluster"] = {
            "partitions": 3, "replication_factor": 1, "session_timeout_ms": 3000,
            "metrics_listen": {role: f"127.0.0.1:{free_port()}" for role in CLUSTER}}
        yield m
    finally:
        stop_leftovers(root)
        shutil.rmtree(base, ignore_errors=True)


def set_roles(minion: LocalMinion, roles: Any, servers: Any = "") -> None:
    """Change the minion's pillar as an operator would (the file, not the command line)."""
    minion.data["threatseer"]["roles"] = roles
    minion.data["threatseer"]["cluster"] = {"bootstrap_servers": servers}
    write_pillar(minion.pillar, minion.data)


def running(minion: LocalMinion, role: str) -> int | None:
    """The pid of ``role``'s daemon when its init script says it runs, else None."""
    if not (minion.root / "etc/init.d" / SERVICES[role]).exists() or \
            minion.initd(SERVICES[role], "status").returncode != 0:
        return None
    return minion.pid(SERVICES[role])


def cmdline(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")[:-1]


def service_files(minion: LocalMinion, role: str) -> list[Path]:
    name = SERVICES[role]
    return [p for p in (minion.root / "etc/init.d" / name,
                        minion.root / "etc/systemd/system" / f"{name}.service") if p.exists()]


def test_the_embedded_hub_by_default(minion: LocalMinion) -> None:
    rc, ret, err = minion.apply("threatseer.hub,threatseer.rules")
    assert rc == 0 and not state_failures(ret), state_failures(ret) or err[-2000:]
    assert running(minion, "hub")
    for role in CLUSTER:
        assert running(minion, role) is None and service_files(minion, role) == []
    wait_for(lambda: hub_status(minion.root).get("bundle", {}).get("version") == "1.0.0", 60,
             "the hub on bundle 1.0.0")


def test_pillar_roles_move_the_host_to_the_cluster_roles(minion: LocalMinion,
                                                          broker: Any) -> None:
    from threatseer.hub.cluster.config import ClusterConfig
    from threatseer.hub.cluster.status import read_status

    hub_pid = running(minion, "hub")
    assert hub_pid
    set_roles(minion, CLUSTER, broker.bootstrap)
    rc, ret, err = minion.apply("threatseer.hub,threatseer.rules")
    assert rc == 0 and not state_failures(ret), state_failures(ret) or err[-2000:]
    root = minion.root
    wait_for(lambda: exited(hub_pid), 30, "the embedded hub to stop")
    assert service_files(minion, "hub") == []
    config = root / "etc/threatseer/hub.yaml"
    hub_yaml = yaml.safe_load(config.read_text())
    assert hub_yaml["cluster"]["bootstrap_servers"] == broker.bootstrap
    assert hub_yaml["admin"]["trusted_signing_keys"] == [
        f"{root}/etc/threatseer/bundle-signing.pub"]
    exe = f"{root}/opt/threatseer/venv/bin/threatseer"
    for role in CLUSTER:
        pid = running(minion, role)
        assert pid, f"{role} does not run: {minion.initd(SERVICES[role], 'status').stdout}"
        assert cmdline(pid)[-4:] == [exe, role, "-c", str(config)], cmdline(pid)
        unit = (root / f"etc/systemd/system/{SERVICES[role]}.service").read_text()
        assert f"ExecStart={exe} {role} -c {config}" in unit.splitlines()
    # They are members of the cluster on that broker, the scorer on the announced bundle.
    cfg = ClusterConfig(bootstrap_servers=broker.bootstrap)

    def members() -> dict[str, Any] | None:
        docs = read_status(cfg, timeout=2.0)
        roles = {d.get("role"): d for d in docs.values() if "updated_at" in d}
        # (the scorer may start on 1.0.0 from the store the embedded hub left: the
        # announcement's activation is what shows the feed at work)
        ok = set(roles) == set(CLUSTER) and (
            roles["scorer"].get("bundle", {}).get("version") == "1.0.0"
            and roles["scorer"].get("bundle_feed", {}).get("activated", 0) >= 1)
        return roles if ok else None

    roles = wait_for(members, 120, "gateway, scorer and output-worker status on the broker, "
                     "the scorer on the announced bundle 1.0.0", 1)
    assert roles["scorer"]["bundle_feed"]["refused"] == 0
    assert roles["gateway"]["ingest"] == minion.data["threatseer"]["hub"]["config"][
        "ingest"]["endpoint"]


def test_a_second_apply_changes_nothing(minion: LocalMinion) -> None:
    pids = {role: running(minion, role) for role in CLUSTER}
    rc, ret, _ = minion.apply("threatseer.hub,threatseer.rules")
    assert rc == 0 and not state_failures(ret), state_failures(ret)
    assert state_changes(ret) == []
    assert {role: running(minion, role) for role in CLUSTER} == pids


def test_pillar_roles_move_the_host_back_to_the_embedded_hub(minion: LocalMinion) -> None:
    pids = {role: running(minion, role) for role in CLUSTER}
    set_roles(minion, ["hub"])
    rc, ret, err = minion.apply("threatseer.hub,threatseer.rules")
    assert rc == 0 and not state_failures(ret), state_failures(ret) or err[-2000:]
    for role, pid in pids.items():
        assert pid and exited(pid), role
        assert service_files(minion, role) == [], role
    hub_pid = running(minion, "hub")
    assert hub_pid
    hub_yaml = yaml.safe_load((minion.root / "etc/threatseer/hub.yaml").read_text())
    assert "bootstrap_servers" not in hub_yaml["cluster"]
    wait_for(lambda: hub_status(minion.root).get("pid") == hub_pid, 60,
             "the embedded hub's status")


@pytest.mark.parametrize(("roles", "servers", "why"), [
    (["hub", "scorer"], "127.0.0.1:9092", "exclude each other"),
    (["gateway"], "", "bootstrap_servers is empty"),
    (["scorer", "router"], "kafka1.example.net", "unknown router"),
    (["scorer"], "127.0.0.1:9092,kafka1.example.net", '"kafka1.example.net" is not host:port'),
])
def test_a_bad_pillar_fails_clearly_and_changes_nothing(minion: LocalMinion, roles: list[str],
                                                        servers: str, why: str) -> None:
    config = minion.root / "etc/threatseer/hub.yaml"
    before, hub_pid = config.read_text(), running(minion, "hub")
    set_roles(minion, roles, servers)
    try:
        rc, ret, _ = minion.apply("threatseer.service.hub")
    finally:
        set_roles(minion, ["hub"])
    assert rc != 0
    failed = state_failures(ret)
    assert any(f.startswith("threatseer-hub-roles-invalid: pillar threatseer:") and why in f
               for f in failed), failed
    assert config.read_text() == before
    assert running(minion, "hub") == hub_pid


def test_clean_removes_everything_the_roles_installed(minion: LocalMinion) -> None:
    pid = running(minion, "hub")
    rc, ret, _ = minion.apply("threatseer.clean")
    assert rc == 0 and not state_failures(ret), state_failures(ret)
    wait_for(lambda: exited(pid), 30, f"pid {pid} to exit")
    left = sorted(str(p.relative_to(minion.root)) for p in minion.root.rglob("*")
                  if p.is_file() or p.is_symlink())
    assert left == []
