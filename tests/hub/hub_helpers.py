"""Helpers for the hub tests: event factories, real ZeroMQ senders/subscribers, hub runners.

Test files import these as ``hub_helpers`` (this folder is put on sys.path by conftest.py).
"""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
import zmq

from tests.conftest import free_port, stop_processes
from threatseer.common import ecs, wire
from threatseer.hub import publish
from threatseer.hub.config import HubConfig

_pid = itertools.count(1000)


def base(action: str, **fields: Any) -> dict[str, Any]:
    cat, typ = ecs.CATEGORIES[action]
    ev = {"@timestamp": "2026-11-28T02:00:00.000000Z", "event.kind": "event",
          "event.category": cat, "event.type": typ, "event.action": action,
          "host.name": "web1", "process.pid": next(_pid)}
    ev.update(fields)
    return ev


def exec_event(exe: str = "/usr/bin/ls", args: list[str] | None = None,
               parent: str = "/bin/bash", **fields: Any) -> dict[str, Any]:
    args = args if args is not None else [exe.rpartition("/")[2], "-l"]
    return base("exec", **{"process.executable": exe, "process.name": exe.rpartition("/")[2][:15],
                           "process.args": args, "process.parent.pid": 1,
                           "process.command_line": " ".join(map(str, args))
                           if isinstance(args, list) else args,
                           "process.parent.executable": parent, **fields})


def open_event(path: str, flags: list[str] | None = None, exe: str = "/usr/bin/cat",
               **fields: Any) -> dict[str, Any]:
    return base("open", **{"file.path": path, "threatseer.open.flags": flags or ["read"],
                           "process.executable": exe, **fields})


def connect_event(ip: str, port: int = 443, exe: str = "/usr/bin/curl",
                  **fields: Any) -> dict[str, Any]:
    return base("connect", **{"destination.ip": ip, "destination.port": port,
                              "network.transport": "tcp", "source.ip": "10.0.0.5",
                              "source.port": 40000, "process.executable": exe, **fields})


def dns_event(name: str, exe: str = "/usr/bin/curl") -> dict[str, Any]:
    return base("dns-query", **{"dns.question.name": name, "process.executable": exe})


def endpoint() -> str:
    return f"tcp://127.0.0.1:{free_port()}"


def hub_config(tmp_path: Path, **overrides: Any) -> HubConfig:
    """Config for an in-process hub on free ports, everything kept (toss nothing)."""
    cfg = HubConfig()
    cfg.ingest.endpoint = endpoint()
    cfg.publish.endpoint = endpoint()
    cfg.metrics.listen = ""
    cfg.state_dir = str(tmp_path / "state")
    cfg.plaintext = True  # transport security has its own tests (tests/transport)
    cfg.publish.start_grace_s = 0.0
    cfg.actions.toss_below = -1000
    for key, value in overrides.items():
        section, _, name = key.partition("__")
        if name:
            setattr(getattr(cfg, section), name, value)
        else:
            setattr(cfg, section, value)
    return cfg


class Sender:
    """A sensor's side of the wire: DEALER socket + the real wire module (no spool: epoch 0,
    the hub's acks are not read)."""

    def __init__(self, ctx: zmq.Context, ep: str, sensor_id: str, hwm: int = 1000) -> None:
        self.sock = ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.SNDHWM, hwm)
        self.sock.setsockopt(zmq.LINGER, 2000)
        self.sock.connect(ep)
        self.sensor_id = sensor_id
        self.seq = 0

    def send(self, events: list[dict[str, Any]]) -> int:
        self.seq += 1
        self.sock.send_multipart(wire.encode(wire.Batch(self.sensor_id, self.seq, events,
                                                        host="web1")))
        return self.seq

    def send_raw(self, frames: list[bytes]) -> None:
        self.sock.send_multipart(frames)

    def close(self) -> None:
        self.sock.close()


class Subscriber:
    def __init__(self, ctx: zmq.Context, ep: str, topics: tuple[str, ...] = ("",)) -> None:
        self.sock = ctx.socket(zmq.SUB)
        self.sock.setsockopt(zmq.RCVHWM, 0)
        for t in topics:
            self.sock.setsockopt(zmq.SUBSCRIBE, t.encode())
        self.sock.connect(ep)
        self.pending: list[tuple[str, dict[str, Any]]] = []

    def recv(self, timeout_s: float = 5.0) -> tuple[str, dict[str, Any]] | None:
        """One ``(topic, event)``; a published message may carry several events."""
        if not self.pending:
            if not self.sock.poll(int(timeout_s * 1000)):
                return None
            topic, events = publish.decode(self.sock.recv_multipart())
            self.pending.extend((topic, ev) for ev in events)
        return self.pending.pop(0)

    def collect(self, n: int, timeout_s: float = 10.0) -> list[tuple[str, dict[str, Any]]]:
        out = []
        deadline = time.monotonic() + timeout_s
        while len(out) < n and time.monotonic() < deadline:
            got = self.recv(0.2)
            if got is not None:
                out.append(got)
        return out

    def drain(self, quiet_s: float = 0.3) -> list[tuple[str, dict[str, Any]]]:
        out = []
        while (got := self.recv(quiet_s)) is not None:
            out.append(got)
        return out

    def close(self) -> None:
        self.sock.close(linger=0)


def wait_connected(sender: Sender, sub: Subscriber, timeout_s: float = 30.0) -> None:
    """Send probe events until one comes out of the PUB (ZeroMQ's slow-joiner), then drain."""
    deadline = time.monotonic() + timeout_s
    probe = ecs.SENSOR_HEALTH
    while time.monotonic() < deadline:
        sender.send([base(probe, **{"threatseer.health.probe": 1})])
        if sub.recv(0.2) is not None:
            sub.drain(0.3)
            return
    raise AssertionError("hub never published a probe event")


def write_yaml(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


class HubProcess:
    """The real ``threatseer hub`` process, stopped (SIGTERM, then SIGKILL) on exit.

    Its stdout and stderr are drained by threads once it is ready, so a chatty hub (a stdout
    output, warnings) never blocks on a full pipe during a test."""

    def __init__(self, cmd: list[str], config: Path) -> None:
        self.proc = subprocess.Popen([*cmd, "hub", "-c", str(config)], stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 30
        line = ""
        early: list[str] = []
        while time.monotonic() < deadline:
            line = self.proc.stderr.readline()
            early.append(line)
            if "hub ready" in line or not line:
                break
        if "hub ready" not in line:
            self.kill()
            raise AssertionError(f"hub did not start: {''.join(early)}{self.proc.stderr.read()}")
        self._out: list[str] = []
        self._err: list[str] = list(early)
        self._drains = [threading.Thread(target=self._drain, args=(f, buf), daemon=True)
                        for f, buf in ((self.proc.stdout, self._out),
                                       (self.proc.stderr, self._err))]
        for t in self._drains:
            t.start()

    @staticmethod
    def _drain(stream: Any, into: list[str]) -> None:
        for line in stream:
            into.append(line)

    def stop(self, timeout: float = 30.0) -> tuple[int, str, str]:
        stop_processes(self.proc, timeout=timeout)
        for t in self._drains:
            t.join(5)
        return self.proc.returncode, "".join(self._out), "".join(self._err)

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


# Fixtures, imported by the conftest.py of every area that runs in-process hubs.

@pytest.fixture
def zctx() -> Iterator[zmq.Context]:
    ctx = zmq.Context()
    yield ctx
    ctx.destroy(linger=0)


@pytest.fixture
def start_hub(tmp_path):  # type: ignore[no-untyped-def]
    """Factory of in-process hubs on free ports, plaintext (``start_hub(start=False,
    bundle_obj=Bundle(...), ingest__x=...)``); every hub it made is stopped at the end, even
    when the test fails."""
    from threatseer.hub.daemon import Hub

    hubs = []

    def make(start: bool = True, bundle_obj=None, **overrides):  # type: ignore[no-untyped-def]
        hub = Hub(hub_config(tmp_path, **overrides), bundle=bundle_obj, stop_timeout_s=5)
        hubs.append(hub)
        if start:
            hub.start()
        return hub

    yield make
    for hub in hubs:
        if not hub._stopped:
            hub.stop()
