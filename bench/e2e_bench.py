"""End-to-end latency: from a process's exec in the kernel to a ZeroMQ subscriber of the hub.

Starts a real hub (default bundle) and a real sensor, subscribes to the hub's PUB socket, and
execs marked commands; each scored exec event's kernel timestamp (``@timestamp``) is compared
with the wall clock when the subscriber receives it. Measured at idle and while
``bench/loadgen`` drives 10,000 watched opens per second through the same pipeline.

Both hops run in plaintext mode here (bench/transport_bench.py measures CURVE's cost).

Run as root:  .venv/bin/python bench/e2e_bench.py [--samples 200]
Last line:    idle_p50_ms=... idle_p99_ms=... load_p50_ms=... load_p99_ms=... (key=value)
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import signal
import subprocess
import tempfile
import threading
import time
import uuid
from pathlib import Path

import yaml
import zmq
from benchlib import OUT, ROOT, THREATSEER, build_loadgen, free_port, percentile

from threatseer.hub import publish


def parse_ts(text: str) -> float:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


class Subscriber(threading.Thread):
    def __init__(self, endpoint: str, marker: str) -> None:
        super().__init__(daemon=True)
        self.sock = zmq.Context.instance().socket(zmq.SUB)
        self.sock.setsockopt(zmq.SUBSCRIBE, b"")
        self.sock.setsockopt(zmq.RCVHWM, 1_000_000)
        self.sock.connect(endpoint)
        self.marker = marker
        self.latencies: list[float] = []
        self.seen_any = threading.Event()
        self.stopped = False

    def run(self) -> None:
        while not self.stopped:
            if not self.sock.poll(100):
                continue
            _topic, events = publish.decode(self.sock.recv_multipart())
            now = time.time()
            self.seen_any.set()
            for ev in events:
                if ev.get("event.action") == "exec" and self.marker in ev.get("process.args", ()):
                    self.latencies.append((now - parse_ts(ev["@timestamp"])) * 1000)


def measure(sub: Subscriber, samples: int, gap: float) -> list[float]:
    start = len(sub.latencies)
    for _ in range(samples):
        subprocess.run(["/bin/true", sub.marker], check=True)
        time.sleep(gap)
    deadline = time.monotonic() + 5
    while len(sub.latencies) - start < samples and time.monotonic() < deadline:
        time.sleep(0.05)
    return sub.latencies[start:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=200)
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root: the sensor loads BPF programs")
    build_loadgen()
    tmp = Path(tempfile.mkdtemp(prefix="ts-e2e-bench-"))
    ingest, pub = f"tcp://127.0.0.1:{free_port()}", f"tcp://127.0.0.1:{free_port()}"
    (tmp / "hub.yaml").write_text(yaml.safe_dump({
        "ingest": {"endpoint": ingest}, "publish": {"endpoint": pub}, "metrics": {"listen": ""},
        "state_dir": str(tmp / "hub"), "bundle": str(ROOT / "rules/default"),
        "admin": {"allow_unsigned": True}, "log_level": "warning", "plaintext": True}))
    (tmp / "sensor.yaml").write_text(yaml.safe_dump({
        "hub": ingest, "state_dir": str(tmp / "sensor"), "log_level": "warning",
        "sensitive_paths": ["/etc/passwd", "/etc/shadow"], "plaintext": True}))
    sub = Subscriber(pub, f"e2e-{uuid.uuid4().hex[:8]}")
    sub.start()
    procs = [subprocess.Popen([THREATSEER, "hub", "-c", str(tmp / "hub.yaml")]),
             subprocess.Popen([THREATSEER, "sensor", "-c", str(tmp / "sensor.yaml")])]
    try:
        if not sub.seen_any.wait(90):
            raise SystemExit("no event reached the subscriber")
        time.sleep(1)
        idle = measure(sub, args.samples, 0.02)
        load = subprocess.Popen([str(OUT / "loadgen"), "open", "3600", "10000", "/etc/passwd"],
                                stdout=subprocess.DEVNULL)
        time.sleep(2)
        busy = measure(sub, args.samples, 0.02)
        load.terminate()
        load.wait()
    finally:
        for p in reversed(procs):
            p.send_signal(signal.SIGTERM)
        for p in procs:
            p.wait(30)
        sub.stopped = True
    for name, values in (("idle", idle), ("10k events/s", busy)):
        print(f"{name:>14}: {len(values)}/{args.samples} received, p50 "
              f"{percentile(values, 0.5):.1f} ms, p99 {percentile(values, 0.99):.1f} ms")
    print(f"idle_p50_ms={percentile(idle, 0.5):.1f} idle_p99_ms={percentile(idle, 0.99):.1f} "
          f"load_p50_ms={percentile(busy, 0.5):.1f} load_p99_ms={percentile(busy, 0.99):.1f} "
          f"received={len(idle) + len(busy)} expected={2 * args.samples}")


if __name__ == "__main__":
    main()
