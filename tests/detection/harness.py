"""A real hub and a real sensor, started once, and the scored events of each sandboxed run.

The hub loads the bundle under test (the default one unless told), the sensor runs with its
default configuration (what ships is what is measured), and a SUB socket on the hub's PUB
collects every scored event. :meth:`DetectionPipeline.run` runs one script in the
:class:`~sandbox.Sandbox` and returns the events of its cgroup, complete: after the script,
a marker process runs in the same cgroup, and once its exec event is back from the hub, a
second marker outside it makes sure the rest of the marker's batch (published per topic) was
received too.

Used by tests/detection/ and bench/detection_bench.py.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
import zmq
from sandbox import Run, Sandbox  # noqa: I001 (tests/detection is on sys.path)

from tests.conftest import stop_processes
from threatseer.hub import publish

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_BUNDLE = ROOT / "rules" / "default"
MARKER = "threatseer-corpus-marker-"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Outcome:
    """What the pipeline made of one run."""

    run: Run
    events: list[dict[str, Any]] = field(default_factory=list)

    @property
    def alerts(self) -> list[dict[str, Any]]:
        return [e for e in self.events if e.get("event.kind") == "alert"]

    def rules(self, alerted_only: bool = True) -> set[str]:
        src = self.alerts if alerted_only else self.events
        return {i["rule"] for e in src for i in e.get("threatseer.indicators", ())}

    def summary(self, limit: int = 12) -> str:
        """The run's alerts (or its best-scored events when none) for a failure message."""
        shown = self.alerts or sorted(self.events, key=lambda e: -e.get("event.risk_score", 0))
        lines = [f"{len(self.events)} events, {len(self.alerts)} alerts; rc={self.run.returncode}"
                 f" timed_out={self.run.timed_out}"]
        for e in shown[:limit]:
            inds = ", ".join(f"{i['rule']}={i['score']}" for i in e.get("threatseer.indicators",
                                                                         ()))
            what = e.get("process.command_line") or e.get("file.path") or e.get(
                "dns.question.name") or e.get("destination.ip", "")
            lines.append(f"  [{e.get('event.risk_score')}] {e.get('event.action')} "
                         f"{e.get('process.name')}: {str(what)[:120]} <- {inds}")
        if self.run.output.strip():
            lines.append("output: " + self.run.output.strip()[-800:])
        return "\n".join(lines)


class Collector(threading.Thread):
    """Keeps the scored events of the cgroups it is told to watch, and marker execs."""

    def __init__(self, endpoint: str) -> None:
        super().__init__(daemon=True, name="corpus-collector")
        self.sock = zmq.Context.instance().socket(zmq.SUB)
        self.sock.setsockopt(zmq.SUBSCRIBE, b"")
        self.sock.setsockopt(zmq.RCVHWM, 0)
        self.sock.connect(endpoint)
        self.lock = threading.Lock()
        self.cond = threading.Condition(self.lock)
        self.watch: dict[int, list[dict[str, Any]]] = {}
        self.markers: dict[str, dict[str, Any]] = {}
        self.seen_any = threading.Event()
        self.stopped = False
        self.received = 0

    def run(self) -> None:
        while not self.stopped:
            if not self.sock.poll(100):
                continue
            try:
                _topic, events = publish.decode(self.sock.recv_multipart())
            except (ValueError, zmq.ZMQError):
                continue
            self.seen_any.set()
            with self.cond:
                self.received += len(events)
                for ev in events:
                    bucket = self.watch.get(ev.get("threatseer.cgroup.id"))
                    if bucket is not None:
                        bucket.append(ev)
                    if ev.get("event.action") == "exec":
                        for arg in ev.get("process.args") or ():
                            if isinstance(arg, str) and arg.startswith(MARKER):
                                self.markers[arg] = ev
                self.cond.notify_all()
        self.sock.close(0)

    def start_watching(self, cgroup_id: int) -> None:
        with self.lock:
            self.watch[cgroup_id] = []

    def stop_watching(self, cgroup_id: int) -> list[dict[str, Any]]:
        with self.lock:
            return self.watch.pop(cgroup_id, [])

    def wait_marker(self, marker: str, timeout: float) -> dict[str, Any] | None:
        deadline = time.monotonic() + timeout
        with self.cond:
            while marker not in self.markers:
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self.cond.wait(left)
            return self.markers.pop(marker)


class DetectionPipeline:
    """A hub (bundle under test, default actions) and a sensor (default paths), over
    plaintext ZeroMQ on loopback, with a :class:`Collector` on the hub's PUB socket."""

    def __init__(self, workdir: Path, bundle: Path = DEFAULT_BUNDLE,
                 threatseer: list[str] | None = None, hub_extra: dict | None = None) -> None:
        self.workdir = workdir
        threatseer = threatseer or [str(Path(sys.executable).parent / "threatseer")]
        ingest = f"tcp://127.0.0.1:{free_port()}"
        pub = f"tcp://127.0.0.1:{free_port()}"
        hub = {"ingest": {"endpoint": ingest}, "publish": {"endpoint": pub},
               "metrics": {"listen": ""}, "state_dir": str(workdir / "hub"),
               "bundle": str(bundle), "plaintext": True, "log_level": "warning",
               "admin": {"allow_unsigned": True},  # the repository's bundle, unsigned
               **(hub_extra or {})}
        sensor = {"hub": ingest, "state_dir": str(workdir / "sensor"), "plaintext": True,
                  "batch_latency_ms": 20, "health_interval_s": 1.0, "log_level": "warning"}
        (workdir / "hub.yaml").write_text(yaml.safe_dump(hub))
        (workdir / "sensor.yaml").write_text(yaml.safe_dump(sensor))
        self.collector = Collector(pub)
        self.collector.start()
        self.procs: list[subprocess.Popen] = []
        self.logs = [open(workdir / "hub.log", "w"), open(workdir / "sensor.log", "w")]  # noqa: SIM115
        # Scripts that run a test suite use this interpreter (it has pytest).
        self.sandbox = Sandbox(env={"TS_PYTHON": sys.executable}, keep=(str(ROOT), sys.prefix))
        try:
            self.procs.append(subprocess.Popen(
                [*threatseer, "hub", "-c", str(workdir / "hub.yaml")], stderr=self.logs[0]))
            self.procs.append(subprocess.Popen(
                [*threatseer, "sensor", "-c", str(workdir / "sensor.yaml")],
                stderr=self.logs[1]))
            if not self.collector.seen_any.wait(120):
                raise RuntimeError("no scored event from the hub within 120 s: " + self.logs_tail())
            self._barrier("warmup", None)
        except BaseException:
            self.close()
            raise

    def logs_tail(self) -> str:
        return "\n".join(
            f"{name}: " + (self.workdir / name).read_text(errors="replace")[-1500:]
            for name in ("hub.log", "sensor.log"))

    def _alive(self) -> None:
        for p in self.procs:
            if p.poll() is not None:
                raise RuntimeError(f"{p.args[1]} exited with {p.returncode}: " + self.logs_tail())

    def _marker(self, tag: str, cgroup: Any) -> dict[str, Any] | None:
        """Exec a marker (in ``cgroup`` when given) and wait for its scored exec event."""
        marker = f"{MARKER}{tag}-{uuid.uuid4().hex[:8]}"
        preexec = cgroup.join if cgroup is not None else None
        subprocess.run(["/bin/true", marker], check=True, preexec_fn=preexec)
        for _ in range(60):
            ev = self.collector.wait_marker(marker, 1.0)
            if ev is not None:
                return ev
            self._alive()
        raise RuntimeError(f"marker {marker} never came back from the hub: " + self.logs_tail())

    def _barrier(self, tag: str, cgroup: Any) -> dict[str, Any] | None:
        ev = self._marker(tag, cgroup)
        self._marker(tag + "-flush", None)  # the rest of the first marker's batch is in
        return ev

    def run(self, script: str, infra: str = "", timeout: float = 10.0) -> Outcome:
        self._alive()
        marker: dict[str, Any] = {}

        def done(run: Run, cgroup: Any) -> None:
            marker["event"] = self._barrier("end", cgroup)

        cgroups: list[int] = []

        def started(cgroup_id: int) -> None:
            cgroups.append(cgroup_id)
            self.collector.start_watching(cgroup_id)

        try:
            run = self.sandbox.run(script, infra, timeout, on_start=started, on_done=done)
        finally:
            events = sorted((e for cg in cgroups for e in self.collector.stop_watching(cg)),
                            key=lambda e: e.get("event.sequence", 0))
        end = marker["event"]
        ours = [e for e in events if e.get("process.pid") != end.get("process.pid")]
        return Outcome(run, ours)

    def close(self) -> None:
        stop_processes(*reversed(self.procs), timeout=30)
        self.collector.stopped = True
        self.collector.join(5)
        for f in self.logs:
            f.close()


def pipeline_workdir() -> Path:
    return Path(tempfile.mkdtemp(prefix="ts-detection-"))


__all__ = ["DEFAULT_BUNDLE", "DetectionPipeline", "Outcome", "pipeline_workdir"]
