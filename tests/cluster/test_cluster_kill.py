"""The kill action in a cluster, on a real broker (tansu), a real gateway and scorer and a real
sensor (root, eBPF): kernel event -> sensor -> gateway -> batches -> scorer's rule with
``action: kill`` -> commands topic -> every gateway -> the sensor's connection -> pidfd kill
-> ``kill`` event -> batches -> scorer -> events. Also what the gateway refuses (stale or
malformed commands), what the sensor refuses (a reused pid) and that a command delivered
twice (at least once: hub/cluster/commands.py) is carried out once.
Only processes and paths this module made are targets (the rules of the response tests,
scoped to a temporary directory of its own)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from cluster_helpers import TESTS, _load, free_port, member_config, tansu_at, unpack
from confluent_kafka import Consumer, Producer, TopicPartition

from tests.conftest import stop_processes
from threatseer.common import ecs, wire

if os.geteuid() != 0 or not os.path.exists("/sys/kernel/btf/vmlinux"):
    pytest.skip("the cluster kill tests run the real sensor: root and BTF",
                allow_module_level=True)

_response = _load("threatseer_tests_response_conftest", TESTS / "response" / "conftest.py")
write_bundle, EventStream = _response.write_bundle, _response.EventStream
program, run_until_killed = _response.program, _response.run_until_killed
Event = dict[str, Any]
PARTITIONS = 2


class Events(EventStream):
    """Every event committed to the events topic (read_committed)."""

    source = "the events topic"

    def __init__(self, bootstrap: str, topic: str) -> None:
        super().__init__()
        self.consumer = Consumer({"bootstrap.servers": bootstrap,
                                  "group.id": "t-" + uuid.uuid4().hex,
                                  "isolation.level": "read_committed",
                                  "enable.auto.commit": False, "fetch.wait.max.ms": 5})
        self.consumer.assign([TopicPartition(topic, p, 0) for p in range(PARTITIONS)])

    def fetch(self) -> list[Event]:
        return [ev for m in self.consumer.consume(500, 0.1) if not m.error()
                for ev in unpack(m.value())]

    def wait(self, pred: Callable[[Event], bool], timeout: float = 30.0) -> Event:
        return super().wait(pred, timeout)

    def close(self) -> None:
        super().close()
        self.consumer.close()


class Cluster:
    def __init__(self, base: Path, bootstrap: str, cfg: Any, gateway: Any, scorer: Any,
                 events: Events, sensor_id: str) -> None:
        self.base, self.bootstrap, self.cfg = base, bootstrap, cfg
        self.gateway, self.scorer, self.events, self.sensor_id = gateway, scorer, events, \
            sensor_id

    def program(self, where: str, name: str = "sleeper", src: str = "/bin/sleep") -> Path:
        return program(self.base, where, name, src)

    def exec_alert(self, pid: int) -> Event:
        return self.events.wait(lambda e: e.get("process.pid") == pid
                                and e.get("event.action") == "exec")

    def report(self, command_id: str) -> Event:
        return self.events.wait(lambda e: e.get("event.action") == ecs.KILL
                                and e.get("threatseer.response.id") == command_id)

    def send(self, cmd: wire.KillCommand | bytes, age_s: float = 0.0,
             key: bytes | None = None) -> None:
        """A record on the commands topic, as a scorer writes one (or anything else)."""
        prod = Producer({"bootstrap.servers": self.bootstrap})
        value = cmd if isinstance(cmd, bytes) else wire.encode_command(cmd)
        prod.produce(self.cfg.cluster.commands_topic, value=value,
                     key=self.sensor_id.encode() if key is None else key,
                     timestamp=int((time.time() - age_s) * 1000))
        assert prod.flush(30) == 0


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, threatseer_cmd) -> Iterator[Cluster]:  # type: ignore[no-untyped-def]
    from threatseer.hub.cluster.gateway import Gateway
    from threatseer.hub.cluster.scorer import Scorer
    from threatseer.hub.rules.bundle import load_bundle

    tmp = tmp_path_factory.mktemp("cluster-kill")
    base = Path(tempfile.mkdtemp(prefix="ts-cluster-kill-"))
    broker = tansu_at(free_port(), tmp).start()
    started: list[Any] = []
    sensor = events = None
    try:
        cfg = member_config(tmp, broker.bootstrap, "kill", partitions=PARTITIONS)
        cfg.actions.toss_below = 1  # only what a rule scored: the kills' alerts and reports
        cfg.profiles.enabled = False
        cfg.response.kill_rules = {"test_kill": "kill", "test_dry": "dry-run",
                                   "test_deny_exec": "kill"}
        bundle = load_bundle(write_bundle(tmp / "bundle", base))
        gateway = Gateway(cfg)
        gateway.start()
        started.append(gateway)
        events = Events(broker.bootstrap, cfg.cluster.events_topic)
        events.start()
        sensor_id = "ck-" + uuid.uuid4().hex[:8]
        sensor_log = tmp / "sensor.log"
        (tmp / "sensor.yaml").write_text(yaml.safe_dump({
            "hub": cfg.ingest.endpoint, "plaintext": True, "state_dir": str(tmp / "sensor"),
            "sensor_id": sensor_id, "health_interval_s": 1.0, "batch_latency_ms": 20,
            "sensitive_paths": ["/etc/shadow"], "watched_paths": [], "log_level": "info"}))
        sensor = subprocess.Popen([*threatseer_cmd, "sensor", "-c", str(tmp / "sensor.yaml")],
                                  stderr=open(sensor_log, "w"))  # noqa: SIM115
        deadline = time.monotonic() + 60
        while sensor_id not in gateway.senders:  # its first batch is in Kafka
            assert sensor.poll() is None, sensor_log.read_text()
            assert time.monotonic() < deadline, "the sensor never reached the gateway"
            time.sleep(0.1)
        # The scorer starts once the sensor's first batches are older than a command may be:
        # the exec policy it answers them with must still reach the sensor (it is stamped
        # when sent, not with its batch's time).
        time.sleep(cfg.cluster.command_max_age_s + 0.5)
        scorer = Scorer(cfg, bundle=bundle)
        scorer.start()
        started.append(scorer)
        deadline = time.monotonic() + 120
        while len(scorer.owned) < PARTITIONS:
            assert time.monotonic() < deadline, "partitions never assigned"
            time.sleep(0.05)
        deadline = time.monotonic() + 60
        while "exec policy" not in sensor_log.read_text():  # from the scorer, via the gateway
            assert time.monotonic() < deadline, f"no exec policy: {sensor_log.read_text()}"
            time.sleep(0.1)
        yield Cluster(base, broker.bootstrap, cfg, gateway, scorer, events, sensor_id)
    finally:
        if sensor is not None:
            stop_processes(sensor)
        if events is not None:
            events.close()
        for member in reversed(started):
            member.stop()
        broker.stop(signal.SIGKILL)
        shutil.rmtree(base, ignore_errors=True)


def test_a_kill_rule_kills_through_the_cluster_and_the_report_reaches_events(cluster) -> None:
    lived = []
    for _ in range(3):
        t0 = time.monotonic()
        pid = run_until_killed(cluster.program("kill"), timeout=30)
        lived.append(time.monotonic() - t0)
        alert = cluster.exec_alert(pid)
        assert alert["event.kind"] == "alert"
        assert alert["threatseer.response.status"] == "sent"
        assert alert["threatseer.response.rule"] == "test_kill"
        report = cluster.report(alert["threatseer.response.id"])
        assert report["event.outcome"] == "success" and report["event.reason"] == "killed"
        assert report["process.pid"] == pid
        assert report["process.entity_id"] == alert["process.entity_id"]
        assert report["threatseer.response.event_id"] == alert["event.id"]
        assert report["threatseer.response.dry_run"] is False
    assert cluster.gateway.relay.counts["forwarded"] >= 3
    assert cluster.scorer.responder.counts["sent"] >= 3
    print(f"\nexec -> killed through the cluster: {', '.join(f'{t * 1000:.0f}' for t in lived)}"
          " ms")


def test_dry_run_kills_nothing_and_says_what_it_would_have(cluster) -> None:
    child = subprocess.Popen([str(cluster.program("dry")), "30"])
    try:
        alert = cluster.exec_alert(child.pid)
        assert alert["threatseer.response.status"] == "dry-run"
        report = cluster.report(alert["threatseer.response.id"])
        assert report["event.outcome"] == "unknown"
        assert report["event.reason"].startswith("dry run")
        assert report["threatseer.response.dry_run"] is True
        time.sleep(0.3)
        assert child.poll() is None, "a dry run killed"
    finally:
        child.kill()
        child.wait()


def _alerted(cluster: Cluster) -> tuple[subprocess.Popen, str]:
    """A process a rule alerted on (action: kill, not allowed): its entity id from the
    events topic, as a scorer would have used it."""
    child = subprocess.Popen([str(cluster.program("alert")), "30"])
    alert = cluster.exec_alert(child.pid)
    assert alert["threatseer.response.status"] == "refused"
    return child, alert["process.entity_id"]


def _command(pid: int, entity: str) -> wire.KillCommand:
    return wire.KillCommand(id=f"t-{uuid.uuid4().hex}", pid=pid, entity_id=entity,
                            event_id="test", rule="test_kill")


def test_a_pid_reused_by_an_innocent_process_is_not_killed(cluster) -> None:
    first, stale = _alerted(cluster)
    pid = first.pid
    first.kill()
    first.wait()
    time.sleep(0.02)  # a new process must start in another clock tick to differ
    innocent = None
    others: list[subprocess.Popen] = []
    try:
        for _ in range(200):  # make the kernel hand out that pid again (others fork too)
            with open("/proc/sys/kernel/ns_last_pid", "w") as f:
                f.write(str(pid - 1))
            p = subprocess.Popen(["sleep", "30"])
            if p.pid == pid:
                innocent = p
                break
            others.append(p)
        assert innocent is not None, "could not get the pid reused"
        cmd = _command(pid, stale)
        cluster.send(cmd)
        report = cluster.report(cmd.id)
        assert report["event.outcome"] == "failure" and "pid reused" in report["event.reason"]
        time.sleep(0.2)
        assert innocent.poll() is None, "the innocent process was killed"
    finally:
        for p in [*others, *([innocent] if innocent else [])]:
            p.kill()
            p.wait()


def test_the_gateway_drops_stale_and_malformed_commands(cluster) -> None:
    child, entity = _alerted(cluster)
    relay = cluster.gateway.relay
    try:
        before = dict(relay.counts)
        cluster.send(_command(child.pid, entity), age_s=60)  # decided a minute ago
        cluster.send(b"\x81\xa3cmd\xa4kill")  # a kill without its fields
        cluster.send(_command(child.pid, entity), key=b"../not a sensor")
        deadline = time.monotonic() + 30
        while relay.counts["stale"] == before["stale"] or relay.counts["bad"] < before["bad"] + 2:
            assert time.monotonic() < deadline, f"not all refused: {relay.counts}"
            time.sleep(0.05)
        assert relay.counts["forwarded"] == before["forwarded"]
        time.sleep(0.5)
        assert child.poll() is None, "a stale or malformed command killed"
        # the same command, fresh, is carried out: the refusals above were for cause
        cmd = _command(child.pid, entity)
        cluster.send(cmd)
        assert cluster.report(cmd.id)["event.outcome"] == "success"
        assert child.wait(10) == -signal.SIGKILL
        # delivered again (a replay): carried out once, nothing else reported
        forwarded = relay.counts["forwarded"]
        cluster.send(cmd)
        deadline = time.monotonic() + 30
        while relay.counts["forwarded"] == forwarded:
            assert time.monotonic() < deadline, "the repeat was not forwarded"
            time.sleep(0.05)
        time.sleep(1.5)  # the sensor's next batches have come through
        with cluster.events.lock:
            reports = [e for e in cluster.events.events
                       if e.get("threatseer.response.id") == cmd.id]
        assert len(reports) == 1
    finally:
        if child.poll() is None:
            child.kill()
        child.wait()


def test_the_kernel_kills_a_denied_exec_before_its_first_instruction(cluster) -> None:
    """The exec policy reaches the sensor through the cluster (scorer -> commands topic ->
    gateway), so its kernel stops a denied exec: the program's first act never happens."""
    _response.denied_exec_killed_in_kernel(cluster)


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q", "-s"]))
