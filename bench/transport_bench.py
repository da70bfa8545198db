"""Transport benchmark: sensor -> hub throughput and CPU, CURVE on vs off, and the spool.

Real processes: ``threatseer hub`` (no rule bundle, profiles off: this measures the
transport, not the engines) and tests/transport/synthetic_sensor.py (the real HubSink and
on-disk Spool, generated exec events, batches of 500, sending as fast as acks allow).

1. plaintext: N events, wall time from the sensor's start to its last ack; CPU-seconds of
   the sensor and the hub processes per million events.
2. CURVE: the same with CURVE on both ends and the ZAP allow-list.
3. spool: hub stopped; the sensor spools all N events to disk (events/s into the spool); then
   the hub starts and the sensor drains the spool (events/s of the drain, CURVE on).

Each measurement runs ``--rounds`` times (plaintext and CURVE alternating, so a noisy neighbour
hits both alike) and the median is reported.

Usage: .venv/bin/python bench/transport_bench.py [--events N] [--rounds R]
Last line: ``plain_events_per_s=... curve_events_per_s=... curve_ratio=... curve_cpu_ratio=...
spool_in_events_per_s=... spool_drain_events_per_s=... spool_drain_ratio=...``.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from benchlib import ROOT, THREATSEER, cpu_seconds, free_port

SYNTHETIC = ROOT / "tests" / "transport" / "synthetic_sensor.py"


def keygen(dir_: Path, name: str) -> Path:
    subprocess.run([THREATSEER, "keys", "gen", "--type", "curve", "-o", str(dir_ / name)],
                   check=True, capture_output=True)
    return dir_ / name


class Hub:
    def __init__(self, work: Path, curve: bool) -> None:
        self.work = work
        self.ingest = f"tcp://127.0.0.1:{free_port()}"
        cfg = {"ingest": {"endpoint": self.ingest},
               "publish": {"endpoint": f"tcp://127.0.0.1:{free_port()}", "start_grace_s": 0},
               "metrics": {"listen": ""}, "profiles": {"enabled": False},
               "state_dir": str(work / "hub"), "log_level": "warning"}
        if curve:
            keys = work / "keys"
            keys.mkdir(exist_ok=True)
            self.secret = keygen(keys, "hub")
            self.sensor_secret = keygen(keys, "sensor")
            allow = keys / "allow"
            allow.write_text(Path(f"{self.sensor_secret}.pub").read_text())
            cfg.update(curve_secret_key_file=str(self.secret), curve_allow_list=str(allow))
        else:
            cfg["plaintext"] = True
        self.curve = curve
        self.config = work / "hub.yaml"
        self.config.write_text(yaml.safe_dump(cfg))
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen([THREATSEER, "hub", "-c", str(self.config)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     text=True)
        while "hub ready" not in (line := self.proc.stderr.readline()):
            if not line:
                raise SystemExit("hub did not start")
        self.proc.stderr.close()  # nothing is logged at warning level on the good path

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(30)

    def sensor_args(self) -> list[str]:
        if not self.curve:
            return []
        return ["--secret", str(self.sensor_secret), "--server-key", f"{self.secret}.pub"]


def sensor(hub: Hub, work: Path, n: int, name: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(SYNTHETIC), hub.ingest, name, str(work / name), "--total", str(n),
         "--rate", "1e9", "--batch", "500", "--drain-timeout", "600", *hub.sensor_args()],
        stdout=subprocess.PIPE, text=True)


def live_run(work: Path, n: int, curve: bool) -> tuple[float, float]:
    """(events/s, CPU-seconds per million events of sensor + hub)."""
    hub = Hub(work, curve)
    hub.start()
    try:
        hub_cpu0 = cpu_seconds(hub.proc.pid)
        t0 = time.perf_counter()
        s = sensor(hub, work, n, "live")
        sensor_cpu = 0.0
        while s.poll() is None:  # sample its CPU until it exits (then /proc is gone)
            try:
                sensor_cpu = cpu_seconds(s.pid)
            except OSError:
                break
            time.sleep(0.05)
        s.wait()
        wall = time.perf_counter() - t0
        hub_cpu = cpu_seconds(hub.proc.pid) - hub_cpu0
        out = s.stdout.read()
        if s.returncode != 0:
            raise SystemExit(f"sensor failed: {out}")
    finally:
        hub.stop()
    return n / wall, (sensor_cpu + hub_cpu) / n * 1e6


def spool_run(work: Path, n: int) -> tuple[float, float]:
    """(events/s into the spool with the hub down, events/s of the drain after it starts)."""
    hub = Hub(work, True)
    t0 = time.perf_counter()
    s = sensor(hub, work, n, "spooled")
    line = s.stdout.readline()  # "start at ..."
    line = s.stdout.readline()  # "generated up to N; pending ..."
    spool_in = n / (time.perf_counter() - t0)
    if not line.startswith("generated"):
        raise SystemExit(f"unexpected: {line}")
    t1 = time.perf_counter()
    hub.start()
    try:
        s.wait()
        drain = n / (time.perf_counter() - t1)
    finally:
        hub.stop()
    if s.returncode != 0:
        raise SystemExit(f"sensor failed: {s.stdout.read()}")
    return spool_in, drain


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=300_000)
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="ts-transport-bench-"))
    runs: dict[str, list[tuple[float, float]]] = {"plain": [], "curve": [], "spool": []}
    try:
        for r in range(a.rounds):
            for name in ("plain", "curve", "spool"):
                d = work / f"{name}-{r}"
                d.mkdir()
                runs[name].append(spool_run(d, a.events) if name == "spool"
                                  else live_run(d, a.events, name == "curve"))
    finally:
        shutil.rmtree(work, ignore_errors=True)

    def median(name: str) -> tuple[float, float]:
        return (statistics.median(x for x, _ in runs[name]),
                statistics.median(y for _, y in runs[name]))

    (plain, plain_cpu), (curve, curve_cpu) = median("plain"), median("curve")
    spool_in, drain = median("spool")
    print(f"{a.events} events, batches of 500, hub without rules, median of {a.rounds} rounds")
    print(f"plaintext: {plain:,.0f} events/s, {plain_cpu:.2f} CPU-s per million events "
          "(sensor + hub)")
    print(f"CURVE:     {curve:,.0f} events/s, {curve_cpu:.2f} CPU-s per million events "
          f"({curve / plain:.2f}x throughput, {curve_cpu / plain_cpu:.2f}x CPU)")
    print(f"spool:     {spool_in:,.0f} events/s into the spool (hub down), drain "
          f"{drain:,.0f} events/s after the hub starts ({drain / curve:.2f}x live CURVE)")
    print(f"plain_events_per_s={plain:.0f} curve_events_per_s={curve:.0f} "
          f"curve_ratio={curve / plain:.3f} plain_cpu_s_per_m={plain_cpu:.2f} "
          f"curve_cpu_s_per_m={curve_cpu:.2f} curve_cpu_ratio={curve_cpu / plain_cpu:.3f} "
          f"spool_in_events_per_s={spool_in:.0f} spool_drain_events_per_s={drain:.0f} "
          f"spool_drain_ratio={drain / curve:.3f}")


if __name__ == "__main__":
    main()
