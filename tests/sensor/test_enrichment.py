"""Enrichment against the real /proc and real files: ancestry, hashes, users, containers."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys

from threatseer.common import ecs
from threatseer.hub.validate import problems
from threatseer.sensor.containers import ContainerDirectory, container_id
from threatseer.sensor.enrich import Enricher
from threatseer.sensor.hashing import ExecutableHashes
from threatseer.sensor.health import HealthReporter
from threatseer.sensor.proctable import ProcessTable

CID = "a" * 12 + "0123456789abcdef" * 3 + "b" * 4


def make_enricher(tmp_path=None) -> Enricher:
    table = ProcessTable("host-1")
    table.seed()
    containers = ContainerDirectory(str(tmp_path)) if tmp_path else ContainerDirectory()
    return Enricher("s-test", "h", "host-1", proctable=table, containers=containers)


def exec_event(pid: int, ppid: int, exe: str, args: list[str], memcg: str = "") -> dict:
    category, types = ecs.CATEGORIES[ecs.EXEC]
    return {
        "@timestamp": "2026-01-01T00:00:00.000000Z", "event.kind": "event",
        "event.category": category, "event.type": types, "event.action": ecs.EXEC,
        "process.pid": pid, "process.parent.pid": ppid, "process.name": exe.rsplit("/")[-1],
        "process.executable": exe, "process.args": args, "user.id": "0",
        "threatseer.cgroup.memory": memcg,
    }


def test_proc_table_seeds_this_process_and_its_ancestors():
    table = ProcessTable("host-1")
    assert table.seed() > 1
    me = table.get(os.getpid())
    assert me is not None and me.executable == os.path.realpath(sys.executable)
    assert me.ppid == os.getppid()
    names = table.ancestors(os.getppid())
    assert 1 <= len(names) <= 4
    assert names[0] == table.get(os.getppid()).display_name


def test_exec_gets_parent_ancestors_hash_user_and_id():
    enricher = make_enricher()
    child = subprocess.Popen(["sleep", "5"])
    try:
        ev = exec_event(child.pid, os.getpid(), "/usr/bin/sleep", ["sleep", "5"])
        (out,) = enricher.enrich([ev])
    finally:
        child.kill()
        child.wait()
    assert out["process.parent.executable"] == os.path.realpath(sys.executable)
    assert out["process.parent.args"][0].endswith(("python", "pytest")) or out[
        "process.parent.args"]
    assert out["threatseer.ancestors"][0] == os.path.basename(os.path.realpath(sys.executable))
    with open("/usr/bin/sleep", "rb") as f:
        assert out["process.hash.sha256"] == hashlib.sha256(f.read()).hexdigest()
    assert out["user.name"] == "root" or out["user.name"]
    assert out["process.command_line"] == "sleep 5"
    assert out["event.id"].startswith("s-test:")
    assert enricher.identity["agent.id"] == "s-test"
    assert enricher.identity["host.id"] == "host-1"
    assert problems([out]) == []


def test_fork_exec_exit_keep_the_table_current():
    enricher = make_enricher()
    parent = os.getpid()
    fork = {"event.action": ecs.FORK, "process.pid": 999_999, "process.parent.pid": parent,
            "process.start": "2026-01-01T00:00:00.123456Z"}
    ex = exec_event(999_999, parent, "/usr/bin/id", ["id", "-u"])
    grandchild = exec_event(999_998, 999_999, "/usr/bin/true", ["true"])
    exit_ = {"event.action": ecs.EXIT, "process.pid": 999_999}
    out = enricher.enrich([fork, ex, exit_, grandchild])
    assert out[0]["process.executable"] == os.path.realpath(sys.executable)  # inherited
    assert out[1]["process.parent.pid"] == parent
    assert out[0]["process.entity_id"] == out[1]["process.entity_id"]
    # The grandchild's exec arrives after its parent exited: the parent is still known.
    assert out[3]["process.parent.executable"] == "/usr/bin/id"
    assert out[3]["threatseer.ancestors"][:2] == ["id", os.path.basename(
        os.path.realpath(sys.executable))]
    # the parent's user, from its exec (ECS keyword: a string)
    assert out[3]["process.parent.user.id"] == "0"
    assert out[3]["process.parent.user.name"] == "root"


def test_hashes_are_cached_and_capped(tmp_path):
    f = tmp_path / "bin"
    f.write_bytes(b"x" * 100)
    hashes = ExecutableHashes(max_bytes=1000)
    first = hashes.sha256(str(f))
    assert first == hashlib.sha256(b"x" * 100).hexdigest()
    assert hashes.sha256(str(f)) == first and hashes.hashed == 1
    f.write_bytes(b"y" * 2000)  # a new version of the file, too large to hash
    assert hashes.sha256(str(f)) is None and hashes.skipped == 1


def test_container_ids_from_cgroup_names():
    assert container_id(CID) == CID
    assert container_id(f"docker-{CID}.scope") == CID
    assert container_id(f"cri-containerd-{CID}.scope") == CID
    assert container_id(f"/docker/{CID}") == CID
    assert container_id("user.slice") == ""
    assert container_id("") == ""


def test_container_name_and_image_from_runtime_files(tmp_path):
    """Runtime state files written as docker/containerd/podman lay them out (no engine runs here)."""
    d = tmp_path / "var/lib/docker/containers" / CID
    d.mkdir(parents=True)
    (d / "config.v2.json").write_text(json.dumps({"Name": "/web", "Config": {"Image": "nginx:1"}}))
    enricher = make_enricher(tmp_path)
    ev = exec_event(os.getpid(), os.getppid(), "/usr/bin/true", ["true"], f"docker-{CID}.scope")
    again = exec_event(os.getpid(), os.getppid(), "/usr/bin/true", ["true"], CID)
    out = enricher.enrich([ev, again])
    assert [e["event.action"] for e in out] == [ecs.EXEC, ecs.CONTAINER_STARTED, ecs.EXEC]
    for e in out:
        assert e["container.id"] == CID
        assert e["container.name"] == "web" and e["container.image.name"] == "nginx:1"
    assert problems([out[1]]) == []

    cd = tmp_path / "run/containerd/io.containerd.runtime.v2.task/k8s.io" / ("c" * 64)
    cd.mkdir(parents=True)
    (cd / "config.json").write_text(json.dumps({"annotations": {
        "io.kubernetes.cri.container-name": "api", "io.kubernetes.cri.image-name": "app:2"}}))
    info = ContainerDirectory(str(tmp_path)).lookup("c" * 64)
    assert (info.name, info.image, info.runtime) == ("api", "app:2", "containerd")


def test_cgroups_that_are_not_containers_are_not_events():
    enricher = make_enricher()
    created = {"event.action": ecs.CONTAINER_CREATED, "threatseer.cgroup.path": "/user.slice",
               "threatseer.cgroup.memory": "user.slice"}
    assert enricher.enrich([created]) == []
    assert enricher.not_containers == 1


def test_health_reports_loss_explicitly():
    health = HealthReporter()
    first = health.report({"kernel_lost": 0, "send_dropped": 0})
    assert [e["event.action"] for e in first] == [ecs.SENSOR_HEALTH]
    second = health.report({"kernel_lost": 7, "send_dropped": 0})
    assert [e["event.action"] for e in second] == [ecs.SENSOR_HEALTH, ecs.SENSOR_LOSS]
    assert second[1]["threatseer.loss.events"] == 7
    assert second[0]["threatseer.health.kernel_lost_delta"] == 7


def test_v2_cgroup_ids_resolve_to_containers_and_sub_cgroups_inherit():
    """An id never seen in a cgroup event (a container older than the sensor, or whose
    creation record was lost) is opened by its kernfs handle and remembered."""
    import os
    import uuid

    import pytest

    from threatseer.sensor.containers import (
        ContainerCgroups,
        cgroup2_mount,
        container_id_in_path,
    )

    cid = "d" * 64
    assert container_id_in_path(f"/system.slice/docker-{cid}.scope") == cid
    assert container_id_in_path(f"/kubepods.slice/p.slice/cri-containerd-{cid}.scope/init") == cid
    assert container_id_in_path("/user.slice/session-3.scope") == ""
    root = cgroup2_mount()
    if os.geteuid() != 0 or not root:
        pytest.skip("needs root and a cgroup2 hierarchy")
    cid = uuid.uuid4().hex + uuid.uuid4().hex
    top = os.path.join(root, f"threatseer-test-{cid[:8]}")
    inner = os.path.join(top, f"docker-{cid}.scope", "init.scope")
    os.makedirs(inner)
    cg = ContainerCgroups()
    try:
        assert cg.get(os.stat(inner).st_ino) == cid
        assert cg.get(os.stat(top).st_ino) == ""
        assert cg.path_of(os.stat(inner).st_ino) == inner
        assert cg.get(2**63) == "" and cg.resolve_errors == 1  # no such cgroup
    finally:
        cg.close()
        for d in (inner, os.path.dirname(inner), top):
            os.rmdir(d)


def test_a_container_in_two_hierarchies_is_created_and_destroyed_once():
    enricher = make_enricher()
    cid = "e" * 64
    v1 = {"event.action": ecs.CONTAINER_CREATED, "threatseer.cgroup.path": f"/docker/{cid}",
          "threatseer.cgroup.memory": cid, "threatseer.cgroup.hierarchy": 4,
          "threatseer.cgroup.id": 11}
    v2 = {"event.action": ecs.CONTAINER_CREATED,
          "threatseer.cgroup.path": f"/system.slice/docker-{cid}.scope",
          "threatseer.cgroup.memory": f"docker-{cid}.scope", "threatseer.cgroup.hierarchy": 0,
          "threatseer.cgroup.id": 12}
    assert [e["container.id"] for e in enricher.enrich([dict(v1), dict(v2)])] == [cid]
    inside = {"event.action": ecs.OPEN, "process.pid": 1, "file.path": "/etc/shadow",
              "threatseer.cgroup.memory": "", "threatseer.cgroup.id": 12}
    assert enricher.enrich([inside])[0]["container.id"] == cid
    gone = [{**v1, "event.action": ecs.CONTAINER_DESTROYED},
            {**v2, "event.action": ecs.CONTAINER_DESTROYED}]
    assert [e["event.action"] for e in enricher.enrich(gone)] == [ecs.CONTAINER_DESTROYED]
