"""Flood benchmark: a well-behaved sensor's ack latency, alone and beside a hostile one.

A real ``threatseer hub`` (CURVE, default bundle) and two allowed sensor keys. The honest
sensor sends a batch of ``--batch`` events every ``--interval-ms`` and times each batch from
send to ack. The hostile sensor (its own process, its own key) sends, as fast as the socket
takes them (bodies made once, a fresh header each), a rotation of malformed batches:
ill-typed fields (``event.kind: ["x"]``, ``event.category: [{}]``, out-of-range integers),
160 KB command lines, undecodable bodies, LZ4 bombs, a sequence number of 2**64-1, batches
sent under the honest sensor's id and headers that do not decode. Phase 1 runs the honest
sensor alone, phase 2 with the flood; each reports p50/p99/max ack latency and the hub's
CPU-seconds per second, and phase 2 how the hub counted the hostile batches (the penalty box
of hub/penalty.py refuses most of them unread).

On a 2-core machine the hostile process and the hub share the CPU with the honest sender:
part of what phase 2 shows is that sharing, not the hub's handling of the flood (run it more
than once; the key line gives phase 2's p99 next to phase 1's).

Usage: .venv/bin/python bench/flood_bench.py [--seconds 10] [--batch 100] [--interval-ms 20]
Last line: ``p50_ms_quiet=... p99_ms_quiet=... p50_ms_flood=... p99_ms_flood=...
hostile_batches_per_s=... honest_batches_acked=... hub_cpu_quiet=... hub_cpu_flood=...``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import shutil
import signal
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import lz4.frame
import msgspec
import yaml
import zmq
from benchlib import ROOT, THREATSEER, free_port

from threatseer.common import ecs, wire
from threatseer.common.keys import curve_client, curve_keypair


def event(sid: str, i: int, **extra: object) -> dict:
    cat, typ = ecs.CATEGORIES["exec"]
    ev = {"@timestamp": "2026-11-28T03:00:00.000000Z", "event.kind": "event",
          "event.category": cat, "event.type": typ, "event.action": "exec",
          "event.id": f"{sid}:{i}", "process.pid": 1000 + i % 30000,
          "process.executable": "/usr/bin/true", "process.name": "true",
          "process.args": ["true", str(i)], "process.parent.pid": 1}
    ev.update(extra)
    return ev


def dealer(ctx: zmq.Context, ep: str, secret: str, server: str) -> zmq.Socket:
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SNDHWM, 1000)
    curve_client(sock, secret.encode(), server.encode())
    sock.connect(ep)
    return sock


def hostile(ep: str, secret: str, server: str, stop_at: float, counter: mp.Value) -> None:
    """Send malformed batches as fast as the hub takes them until ``stop_at``. Bodies are
    made once and each header anew (a fresh sequence number: a repeated one is skipped as a
    duplicate without being opened), so this process spends its time sending."""
    ctx = zmq.Context()
    sock = dealer(ctx, ep, secret, server)
    long_line = "curl " * 32_000
    poisons = [{"event.kind": ["x"]}, {"event.category": [{}]}, {"process.pid": 1 << 63},
               {"process.pid": True}, {"process.command_line": long_line}]
    bodies = [(20, wire.encode_body([event("hostile", k, **p) for k in range(20)], True))
              for p in poisons]
    bodies += [(3, b"\x04\x22\x4d\x18garbage"),  # undecodable
               (3, lz4.frame.compress(b"\x91" + b"\0" * (40 << 20)))]  # 40 MiB > the cap
    one = wire.encode_body([event("hostile", 0)], True)
    pack = msgspec.msgpack.encode
    seq, sent = 0, 0

    def header(sid: str, seq: int, n: int) -> bytes:
        return pack({"v": wire.VERSION, "sid": sid, "seq": seq, "n": n, "t": 0, "e": 1, "z": 1})

    while time.monotonic() < stop_at:
        for kind in range(len(bodies) + 3):
            seq += 1
            if kind < len(bodies):
                n, body = bodies[kind]
                frames = [header("hostile", seq, n), body]
            elif kind == len(bodies):  # a batch number SQLite cannot hold
                frames = [header("hostile", (1 << 64) - 1, 1), one]
            elif kind == len(bodies) + 1:  # the honest sensor's id
                frames = [header("honest", seq, 1), one]
            else:  # a header that does not decode
                frames = [header("hostile", seq, 1)[:-1] + b"\xc1", one]
            try:
                sock.send_multipart(frames, zmq.NOBLOCK)
                sent += 1
            except zmq.Again:
                time.sleep(0.0005)
        while sock.poll(0):
            sock.recv_multipart()
    counter.value = sent
    sock.close(0)
    ctx.term()


def honest(ep: str, secret: str, server: str, seconds: float, batch: int,
           interval: float) -> list[float]:
    """Send a batch every ``interval`` s for ``seconds``; each batch's ack wait (s)."""
    ctx = zmq.Context()
    sock = dealer(ctx, ep, secret, server)
    epoch = time.time_ns()
    sent: dict[int, float] = {}
    waits: list[float] = []
    seq = 0
    # one batch to connect (its wait does not count)
    deadline = time.monotonic() + seconds
    next_send = time.monotonic()
    acked = 0
    while time.monotonic() < deadline or (sent and time.monotonic() < deadline + 10):
        now = time.monotonic()
        if now >= next_send and now < deadline:
            seq += 1
            sock.send_multipart(wire.encode(wire.Batch("honest", seq, [
                event("honest", seq * batch + k) for k in range(batch)], epoch=epoch),
                compress=True))
            sent[seq] = now
            next_send += interval
        if sock.poll(max(0, int((next_send - time.monotonic()) * 1000)) or 1):
            reply = wire.decode_reply(sock.recv_multipart()[-1])
            if not isinstance(reply, tuple):  # a command (the exec policy at connect)
                continue
            _epoch, upto = reply
            t = time.monotonic()
            for s in [s for s in sent if s <= upto]:
                if s > 1:
                    waits.append(t - sent[s])
                del sent[s]
            acked = max(acked, upto)
    sock.close(0)
    ctx.term()
    return waits


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(p / 100 * len(values)))] * 1000 if values else 0.0


def cpu_seconds(pid: int) -> float:
    """User + system CPU-seconds of a process so far (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--interval-ms", type=float, default=20.0)
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="ts-flood-bench-"))
    hub_secret, hub_public = curve_keypair()
    keys = {name: curve_keypair() for name in ("honest", "hostile")}
    (tmp / "hub.key").write_text(hub_secret)
    (tmp / "sensors.allow").write_text("".join(f"{pub}  # {name}\n"
                                               for name, (_s, pub) in keys.items()))
    ep = f"tcp://127.0.0.1:{free_port()}"
    (tmp / "hub.yaml").write_text(yaml.safe_dump({
        "ingest": {"endpoint": ep}, "publish": {"endpoint": f"tcp://127.0.0.1:{free_port()}"},
        "metrics": {"listen": ""}, "state_dir": str(tmp / "state"), "log_level": "error",
        "bundle": str(ROOT / "rules/default"), "admin": {"allow_unsigned": True},
        "curve_secret_key_file": str(tmp / "hub.key"),
        "curve_allow_list": str(tmp / "sensors.allow")}))
    hub = subprocess.Popen([THREATSEER, "hub", "-c", str(tmp / "hub.yaml")],
                           stderr=open(tmp / "hub.log", "w"))  # noqa: SIM115
    try:
        deadline = time.monotonic() + 30
        while "hub ready" not in (tmp / "hub.log").read_text():
            if hub.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("flood_bench: the hub did not start: " +
                                 (tmp / "hub.log").read_text()[-2000:])
            time.sleep(0.1)
        time.sleep(1.5)  # publish.start_grace_s
        interval = a.interval_ms / 1000
        c0, t0 = cpu_seconds(hub.pid), time.monotonic()
        quiet = honest(ep, keys["honest"][0], hub_public, a.seconds, a.batch, interval)
        cpu_quiet = (cpu_seconds(hub.pid) - c0) / (time.monotonic() - t0)
        count = mp.Value("q", 0)
        flood = mp.Process(target=hostile, args=(ep, keys["hostile"][0], hub_public,
                                                 time.monotonic() + a.seconds + 1, count))
        flood.start()
        time.sleep(0.5)
        c0, t0 = cpu_seconds(hub.pid), time.monotonic()
        loud = honest(ep, keys["honest"][0], hub_public, a.seconds, a.batch, interval)
        cpu_loud = (cpu_seconds(hub.pid) - c0) / (time.monotonic() - t0)
        flood.join(30)
        rate = count.value / (a.seconds + 1)
        time.sleep(1)  # what the hostile process left queued is read
    finally:
        hub.send_signal(signal.SIGTERM)
        hub.wait(60)
        try:
            status = json.loads((tmp / "state" / "status.json").read_text())
        except (OSError, ValueError):
            status = {}
        shutil.rmtree(tmp, ignore_errors=True)
    bad = status.get("sensors", {}).get("hostile", {}).get("bad", {})
    expected = int(a.seconds / interval) - 1
    print(f"{'':24}{'alone':>12}{'with the flood':>18}")
    for label, p in (("ack p50 (ms)", 50), ("ack p99 (ms)", 99), ("ack max (ms)", 100)):
        print(f"{label:24}{pct(quiet, p):12.1f}{pct(loud, p):18.1f}")
    print(f"{'batches acked':24}{len(quiet):12}{len(loud):18}   (of ~{expected} each)")
    print(f"{'hub CPU-s per s':24}{cpu_quiet:12.2f}{cpu_loud:18.2f}")
    print(f"hostile batches sent: {rate:.0f}/s, {count.value} in all (those its socket still "
          f"held at its end are dropped there); the hub counted {sum(bad.values())} refused "
          "as the hostile sensor's: "
          + ", ".join(f"{k} {v}" for k, v in sorted(bad.items())))
    print(f"penalty box: {status.get('penalty_box')}; median wait alone "
          f"{statistics.median(quiet) * 1000 if quiet else 0:.1f} ms")
    print(f"p50_ms_quiet={pct(quiet, 50):.1f} p99_ms_quiet={pct(quiet, 99):.1f} "
          f"p50_ms_flood={pct(loud, 50):.1f} p99_ms_flood={pct(loud, 99):.1f} "
          f"hostile_batches_per_s={rate:.0f} honest_batches_acked={len(loud)} "
          f"hub_cpu_quiet={cpu_quiet:.2f} hub_cpu_flood={cpu_loud:.2f}")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    main()
