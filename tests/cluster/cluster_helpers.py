"""Helpers of the cluster tests: the broker, member configs and processes, a committed-records
reader, wire batches produced straight to the batches topic."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import msgspec
import yaml
from confluent_kafka import Consumer, Producer, TopicPartition

from threatseer.common import configfile, wire
from threatseer.hub.config import HubConfig

TESTS = Path(__file__).resolve().parent.parent
REPO = TESTS.parent
SENSOR = TESTS / "transport" / "synthetic_sensor.py"


def _load(name: str, path: Path) -> Any:
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
        sys.modules[name] = module
        spec.loader.exec_module(module)  # type: ignore[union-attr]
    return sys.modules[name]


_servers = _load("threatseer_tests_output_servers", TESTS / "outputs" / "conftest.py")
Server, tansu_at = _servers.Server, _servers.tansu_at
free_port = _load("threatseer_tests_root_conftest", TESTS / "conftest.py").free_port


def member_config(tmp: Path, bootstrap: str, name: str, **cluster: Any) -> HubConfig:
    """A plaintext member of a 12-partition, replication-1 cluster on ``bootstrap``."""
    doc: dict[str, Any] = {
        "plaintext": True, "state_dir": str(tmp / name), "log_level": "info",
        "metrics": {"listen": ""}, "publish": {"endpoint": ""},
        "ingest": {"endpoint": f"tcp://127.0.0.1:{free_port()}"},
        "bundle": str(REPO / "rules" / "default"),
        "cluster": {"bootstrap_servers": bootstrap, "name": name, "replication_factor": 1,
                    "partitions": 12, "session_timeout_ms": 3000,
                    "metrics_listen": {"gateway": "", "scorer": "", "output-worker": ""},
                    **cluster},
    }
    return configfile.from_dict(doc, HubConfig)


def curve_member_config(tmp: Path, bootstrap: str, name: str, keys: Any) -> HubConfig:
    """:func:`member_config` with CURVE: the hub key pair and allow-list of ``keys``
    (tests/transport/transport_helpers.py ``Keys``)."""
    cfg = member_config(tmp, bootstrap, name)
    cfg.plaintext = False
    cfg.curve_secret_key_file = str(keys.hub[0])
    cfg.curve_allow_list = str(keys.allow)
    return cfg


def write_config(cfg: HubConfig, path: Path) -> Path:
    path.write_text(yaml.safe_dump(configfile.to_dict(cfg)))
    return path


class Member:
    """A cluster role (`threatseer gateway|scorer|output-worker`) as a process of its own."""

    def __init__(self, role: str, cfg: HubConfig, tmp: Path) -> None:
        self.role, self.cfg = role, cfg
        conf = write_config(cfg, tmp / f"{cfg.cluster.name}.yaml")
        self.log = tmp / f"{cfg.cluster.name}.log"
        exe = os.path.join(os.path.dirname(sys.executable), "threatseer")
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen([exe, role, "-c", str(conf)], stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True)

    def wait_ready(self, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if f"{self.role} ready".encode() in self.log.read_bytes():
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        raise AssertionError(f"{self.role} not ready: {self.log.read_text()[-3000:]}")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def read_topic(bootstrap: str, topic: str, partitions: int, idle_s: float = 2.0,
               timeout: float = 60.0) -> list[Any]:
    """Every record a read_committed consumer gets from ``topic`` (until idle)."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "t-" + uuid.uuid4().hex,
                  "isolation.level": "read_committed", "enable.auto.commit": False})
    c.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    out: list[Any] = []
    deadline = time.monotonic() + timeout
    last = time.monotonic()
    try:
        while time.monotonic() < deadline and time.monotonic() - last < idle_s:
            for m in c.consume(1000, 0.2):
                if not m.error():
                    out.append(m)
                    last = time.monotonic()
    finally:
        c.close()
    return out


class EventsTally:
    """A read_committed reader of the events topic that keeps what it read, for waiting on
    a condition (every expected event delivered) instead of sleeping.

    ``delivered`` counts each event id once per record delivered, skipping a record at or
    before the last input position read from its partition: a copy from an aborted
    transaction, which the broker shows (the output workers skip it the same way)."""

    def __init__(self, bootstrap: str, topic: str, partitions: int) -> None:
        self.consumer = Consumer({"bootstrap.servers": bootstrap,
                                  "group.id": "t-" + uuid.uuid4().hex,
                                  "isolation.level": "read_committed",
                                  "enable.auto.commit": False})
        self.consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
        self.records: list[Any] = []
        self.delivered: dict[str, int] = {}
        self.all_ids: dict[str, int] = {}
        self.copies = 0
        self._last: dict[int, tuple[int, int]] = {}

    def read(self, seconds: float) -> int:
        """Read for up to ``seconds``; returns the records read."""
        from threatseer.hub.cluster.output_worker import position

        n = 0
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            for m in self.consumer.consume(1000, 0.2):
                if m.error():
                    continue
                n += 1
                self.records.append(m)
                events = unpack(m.value())
                for ev in events:
                    self.all_ids[ev["event.id"]] = self.all_ids.get(ev["event.id"], 0) + 1
                pos = position(m.headers())
                assert pos is not None, "an events record without its input position"
                last = self._last.get(m.partition())
                if last is not None and pos <= last:
                    self.copies += 1
                    continue
                self._last[m.partition()] = pos
                for ev in events:
                    self.delivered[ev["event.id"]] = self.delivered.get(ev["event.id"], 0) + 1
        return n

    def until(self, cond: Any, timeout: float) -> bool:
        """Read until ``cond(self)`` holds or ``timeout`` seconds passed."""
        deadline = time.monotonic() + timeout
        while not cond(self):
            if time.monotonic() > deadline:
                return False
            self.read(0.5)
        return True

    def drain(self, idle_s: float = 2.0, timeout: float = 120.0) -> None:
        """Read until nothing came for ``idle_s``."""
        deadline = time.monotonic() + timeout
        while self.read(idle_s) and time.monotonic() < deadline:
            pass

    def close(self) -> None:
        self.consumer.close()


def wait_for(cond: Any, timeout: float, what: str, step: float = 0.05) -> float:
    """Wait until ``cond()`` is true; returns the seconds it took (AssertionError at
    ``timeout``: generous deadlines, the machine is shared)."""
    t0 = time.monotonic()
    while not cond():
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"timed out after {timeout:.0f} s: {what}")
        time.sleep(step)
    return time.monotonic() - t0


def produce_batch(producer: Producer, topic: str, sid: str, seq: int,
                  events: list[dict[str, Any]], epoch: int = 1, host: str = "web1") -> None:
    """One wire batch on the batches topic, as a gateway stores it."""
    batch = wire.Batch(sid, seq, events, host=host, epoch=epoch, base=seq,
                       common={"host.name": host, "agent.id": sid})
    header, body = wire.encode(batch, compress=True)
    producer.produce(topic, value=body, key=sid.encode(), headers=[("h", header)])


def unpack(value: bytes) -> list[dict[str, Any]]:
    return msgspec.msgpack.decode(value)
