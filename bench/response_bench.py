"""Response latency: from a process's start to its death by a rule with ``action: kill``.

Starts a real hub (the default bundle plus one kill rule for this run's directory, allowed by
``response.kill_rules``) and a real sensor, then starts copies of ``sleep`` under that
directory: the exec event reaches the hub, the rule fires, the hub sends the kill on the
sensor's connection, the sensor checks the process's identity and kills it with a pidfd. Each
target's time from spawn to death is measured through a pidfd. Innocent copies (another
directory) run beside them and must survive: any of them killed is a wrong kill. The same is
measured while ``bench/loadgen`` drives 10,000 watched opens per second, and, side by side,
the in-kernel path (an enforce.yaml exec rule: killed at exec by the sensor's BPF program).

``--cluster``: the same through a cluster instead of the hub (docs/cluster.md): a tansu broker,
a gateway and a scorer (default cluster settings, 12 partitions), the sensor sending to the
gateway; the kill goes scorer -> commands topic -> gateway -> sensor, and so does the exec
policy of the in-kernel phase.

Run as root:  .venv/bin/python bench/response_bench.py [--samples 200] [--cluster]
Last line:    kill_p50_ms=... kill_p99_ms=... load_kill_p99_ms=... kernel_p99_ms=...
              wrong_kills=... (key=value)
"""

from __future__ import annotations

import argparse
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml
from benchlib import OUT, ROOT, THREATSEER, build_loadgen, free_port, percentile


def program(where: Path) -> Path:
    where.mkdir(parents=True, exist_ok=True)
    exe = where / "sleep"
    shutil.copyfile("/bin/sleep", exe)
    exe.chmod(0o755)
    return exe


def time_to_death(exe: Path, innocent: Path, wrong: list[int],
                  timeout_s: float = 5.0) -> float | None:
    """Start ``exe`` (and an innocent beside it); seconds until ``exe`` died, or None."""
    keep = subprocess.Popen([str(innocent), "30"])
    t0 = time.monotonic()
    target = subprocess.Popen([str(exe), "30"])
    fd = os.pidfd_open(target.pid)
    try:
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        died = poller.poll(timeout_s * 1000)
        took = time.monotonic() - t0 if died else None
    finally:
        os.close(fd)
        if target.poll() is None:
            target.kill()
        target.wait()
        time.sleep(0.005)
        if keep.poll() is not None:  # died before we stopped it: the sensor killed it
            wrong.append(keep.pid)
        keep.terminate()
        keep.wait()
    return took


def measure(exe: Path, innocent: Path, samples: int, wrong: list[int]) -> list[float]:
    out = []
    for _ in range(samples):
        took = time_to_death(exe, innocent, wrong)
        if took is not None:
            out.append(took * 1000)
        time.sleep(0.03)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--cluster", action="store_true",
                        help="through a gateway and a scorer on a tansu broker")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root: the sensor loads BPF programs")
    build_loadgen()
    print(f"load average before: {os.getloadavg()[0]:.1f} (1 min), {os.cpu_count()} CPUs")
    tmp = Path(tempfile.mkdtemp(prefix="ts-response-bench-"))
    bundle = tmp / "bundle"
    shutil.copytree(ROOT / "rules/default", bundle)
    (bundle / "rules" / "zz_bench_kill.yaml").write_text(yaml.safe_dump({"rules": [{
        "rule": "bench_kill", "description": "the response bench's targets",
        "condition": f'event.action = exec and process.executable startswith "{tmp}/kill/"',
        "score": 90, "action": "kill"}]}))
    (bundle / "enforce.yaml").write_text(yaml.safe_dump({"exec": [{
        "rule": "bench_deny", "description": "the response bench's in-kernel targets",
        "prefixes": [f"{tmp}/deny/"]}]}))
    ingest = f"tcp://127.0.0.1:{free_port()}"
    hub_cfg: dict[str, Any] = {
        "ingest": {"endpoint": ingest}, "publish": {"endpoint": ""}, "metrics": {"listen": ""},
        "state_dir": str(tmp / "hub"), "bundle": str(bundle), "log_level": "error",
        "plaintext": True, "admin": {"allow_unsigned": True},  # the bench's bundle, unsigned
        "response": {"kill_rules": {"bench_kill": "kill", "bench_deny": "kill"},
                     "max_kills_per_minute": 100_000}}
    broker = None
    if args.cluster:
        sys.path[:0] = [str(ROOT / "tests" / "cluster"), str(ROOT)]
        from cluster_helpers import tansu_at

        broker = tansu_at(free_port(), tmp).start()
        hub_cfg["cluster"] = {
            "bootstrap_servers": broker.bootstrap, "name": "bench", "replication_factor": 1,
            "session_timeout_ms": 3000,
            "metrics_listen": {"gateway": "", "scorer": "", "output-worker": ""}}
    (tmp / "hub.yaml").write_text(yaml.safe_dump(hub_cfg))
    (tmp / "sensor.yaml").write_text(yaml.safe_dump({
        "hub": ingest, "state_dir": str(tmp / "sensor"), "log_level": "error",
        "sensitive_paths": ["/etc/passwd", "/etc/shadow"], "plaintext": True,
        "max_kills_per_minute": 100_000, "health_interval_s": 1.0}))
    target, innocent = program(tmp / "kill"), program(tmp / "keep")
    denied = program(tmp / "deny")
    roles = ["gateway", "scorer"] if args.cluster else ["hub"]
    procs = [subprocess.Popen([THREATSEER, role, "-c", str(tmp / "hub.yaml")])
             for role in roles]
    procs.append(subprocess.Popen([THREATSEER, "sensor", "-c", str(tmp / "sensor.yaml")]))
    wrong: list[int] = []
    try:
        # ready once a target dies (the sensor is up and has the hub's policy)
        deadline = time.monotonic() + 90
        while time_to_death(target, innocent, [], 1.0) is None:
            if time.monotonic() > deadline:
                raise SystemExit("no target was ever killed: is the sensor running?")
        idle = measure(target, innocent, args.samples, wrong)
        kernel = measure(denied, innocent, args.samples, wrong)
        load = subprocess.Popen([str(OUT / "loadgen"), "open", "3600", "10000", "/etc/passwd"],
                                stdout=subprocess.DEVNULL)
        try:
            time.sleep(2)
            busy = measure(target, innocent, args.samples, wrong)
        finally:
            load.terminate()
            load.wait()
    finally:
        for p in reversed(procs):
            p.send_signal(signal.SIGTERM)
        for p in procs:
            p.wait(30)
        if broker is not None:
            broker.stop(signal.SIGKILL)
        shutil.rmtree(tmp, ignore_errors=True)
    path = "cluster" if args.cluster else "hub-driven"
    print(f"load average after: {os.getloadavg()[0]:.1f} (1 min), {os.cpu_count()} CPUs")
    for name, values in ((f"{path}, idle", idle), (f"{path}, 10k events/s", busy),
                         ("in-kernel at exec", kernel)):
        print(f"{name:>26}: {len(values)}/{args.samples} killed, p50 "
              f"{percentile(values, 0.5):.1f} ms, p99 {percentile(values, 0.99):.1f} ms, "
              f"max {max(values, default=float('nan')):.1f} ms")
    print(f"innocent processes killed: {len(wrong)} of {3 * args.samples}")
    print(f"kill_p50_ms={percentile(idle, 0.5):.1f} kill_p99_ms={percentile(idle, 0.99):.1f} "
          f"load_kill_p99_ms={percentile(busy, 0.99):.1f} "
          f"kernel_p99_ms={percentile(kernel, 0.99):.1f} "
          f"killed={len(idle) + len(busy)} expected={2 * args.samples} wrong_kills={len(wrong)}")


if __name__ == "__main__":
    main()
