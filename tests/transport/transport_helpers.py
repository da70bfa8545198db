"""Helpers of the transport tests: keys, a hub process, the synthetic sensor, a subscriber,
and reading the hub's ledger."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import msgpack
import yaml
import zmq

from tests.conftest import free_port, stop_processes
from threatseer.common.keys import curve_client

HERE = Path(__file__).resolve().parent
SYNTHETIC = HERE / "synthetic_sensor.py"
THREATSEER = [os.path.join(os.path.dirname(sys.executable), "threatseer")]



def endpoint() -> str:
    return f"tcp://127.0.0.1:{free_port()}"


def keypair(dir_: Path, name: str) -> tuple[Path, Path]:
    """``threatseer keys gen --type curve`` (the real command): (secret file, public file)."""
    dir_.mkdir(parents=True, exist_ok=True)
    secret = dir_ / name
    subprocess.run([*THREATSEER, "keys", "gen", "--type", "curve", "-o", str(secret)],
                   check=True, capture_output=True)
    return secret, Path(f"{secret}.pub")


def public(path: Path) -> bytes:
    return path.read_text().split()[0].encode()


def wait_for(pred: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = pred()
        if got:
            return got
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


class Keys:
    """Hub, sensor, subscriber and stranger key pairs, and the hub's allow-list files."""

    def __init__(self, dir_: Path) -> None:
        self.dir = dir_
        self.hub = keypair(dir_, "hub")
        self.sensor = keypair(dir_, "sensor")
        self.subscriber = keypair(dir_, "subscriber")
        self.stranger = keypair(dir_, "stranger")
        self.allow = dir_ / "sensors.allow"
        self.allow.write_text(f"# sensors\n{public(self.sensor[1]).decode()}  # sensor\n")
        self.sub_allow = dir_ / "subscribers.allow"
        self.sub_allow.write_text(f"{public(self.subscriber[1]).decode()}  # tap\n")

    def hub_config(self) -> dict[str, Any]:
        return {"curve_secret_key_file": str(self.hub[0]),
                "curve_allow_list": str(self.allow),
                "curve_subscriber_allow_list": str(self.sub_allow)}


class HubProc:
    """The real ``threatseer hub``; stderr goes to a file (a pipe nobody reads would fill)."""

    def __init__(self, tmp: Path, cfg: dict[str, Any], name: str = "hub") -> None:
        self.tmp = tmp
        self.cfg = cfg
        self.config = tmp / f"{name}.yaml"
        self.config.write_text(yaml.safe_dump(cfg))
        self.log = tmp / f"{name}.log"
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    def start(self, wait: bool = True) -> HubProc:
        offset = self.log.stat().st_size if self.log.exists() else 0
        self.proc = subprocess.Popen([*THREATSEER, "hub", "-c", str(self.config)],
                                     stdout=subprocess.DEVNULL, stderr=open(self.log, "a"))  # noqa: SIM115
        self.starts += 1
        if wait:
            def ready() -> bool:
                assert self.proc is not None and self.proc.poll() is None, self.log_text()
                return "hub ready" in self.log.read_text()[offset:]
            wait_for(ready, 30, "the hub to start")
        return self

    def log_text(self) -> str:
        return self.log.read_text() if self.log.exists() else ""

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def stop(self, timeout: float = 30) -> int:
        assert self.proc is not None
        stop_processes(self.proc, timeout=timeout)
        return self.proc.returncode

    def status(self) -> dict[str, Any]:
        import json

        return json.loads((Path(self.cfg["state_dir"]) / "status.json").read_text())


def hub_cfg(tmp: Path, keys: Keys | None, **extra: Any) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "ingest": {"endpoint": endpoint()}, "publish": {"endpoint": endpoint()},
        "metrics": {"listen": ""}, "profiles": {"enabled": False},
        "actions": {"toss_below": -1000, "alert_at": 1000},
        "state_dir": str(tmp / "hub-state"), "log_level": "info",
    }
    cfg.update(keys.hub_config() if keys is not None else {"plaintext": True})
    cfg.update(extra)
    return cfg


class SensorProc:
    """tests/transport/synthetic_sensor.py: the real HubSink + Spool, generated events."""

    def __init__(self, tmp: Path, ep: str, sensor_id: str, total: int, keys: Keys | None,
                 secret: Path | None = None, **opts: Any) -> None:
        self.args = [sys.executable, str(SYNTHETIC), ep, sensor_id,
                     str(tmp / f"sensor-{sensor_id}"), "--total", str(total)]
        if keys is not None:
            self.args += ["--secret", str(secret or keys.sensor[0]),
                          "--server-key", str(keys.hub[1])]
        for k, v in opts.items():
            self.args += [f"--{k.replace('_', '-')}", str(v)]
        self.log = tmp / f"sensor-{sensor_id}.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> SensorProc:
        self.proc = subprocess.Popen(self.args, stdout=open(self.log, "a"),  # noqa: SIM115
                                     stderr=subprocess.STDOUT)
        return self

    def wait(self, timeout: float) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


class Collector:
    """A SUB socket (CURVE when keys are given) collecting event ids on a thread."""

    def __init__(self, ep: str, secret: Path | None = None, server: Path | None = None) -> None:
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.SUB)
        self.sock.setsockopt(zmq.RCVHWM, 0)
        if secret is not None and server is not None:
            sec = secret.read_text().split()[0].encode()
            curve_client(self.sock, sec, public(server))
        self.sock.setsockopt(zmq.SUBSCRIBE, b"")
        self.sock.connect(ep)
        self.ids: list[str] = []
        self.events: list[dict[str, Any]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            if not self.sock.poll(100):
                continue
            frames = self.sock.recv_multipart()
            for ev in msgpack.unpackb(frames[1], raw=False):
                self.events.append(ev)
                self.ids.append(ev.get("event.id", ""))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close(0)
        self.ctx.term()


def ledger_rows(state_dir: str, sensor_id: str) -> list[tuple[int, int, int]]:
    """(epoch, seq, events_in) of every batch the hub durably recorded as scored."""
    db = sqlite3.connect(os.path.join(state_dir, "ledger.db"))
    try:
        return db.execute("SELECT epoch, seq, events_in FROM scored WHERE sid = ? "
                          "ORDER BY epoch, seq", (sensor_id,)).fetchall()
    finally:
        db.close()
