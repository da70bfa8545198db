"""The hub cluster on a real Kafka-protocol broker (tansu): scorer cost, balance, latency.

1. Events per CPU-second of one scorer (default bundle) against the embedded hub's pipeline
   on the same batches: the scorer's process CPU from its first consumed batch to the last
   scored event, against Pipeline.score over the same decoded batches plus the hub's
   decode (the embedded hub's share that a scorer also does).
2. Balance: two scorers share batches of 200 sensors; min/max of their batch counts.
3. End-to-end p99 at 10k events/s: sensor (HubSink) -> gateway -> Kafka -> scorer -> events
   topic, measured at a read_committed reader of events (send time in the event id).

Run:        .venv/bin/python bench/cluster_bench.py [--events 200000]
Last line:  per_scorer_ratio=... balance=... p99_ms=...
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "cluster"))
sys.path.insert(0, str(ROOT))

from cluster_helpers import free_port, member_config, produce_batch, tansu_at  # noqa: E402
from confluent_kafka import Consumer, Producer, TopicPartition  # noqa: E402

from threatseer.hub.cluster.gateway import Gateway  # noqa: E402
from threatseer.hub.cluster.scorer import Scorer  # noqa: E402
from threatseer.hub.rules.bundle import load_bundle  # noqa: E402
from threatseer.hub.scoring import Pipeline  # noqa: E402
from threatseer.sensor.ship import HubSink  # noqa: E402
from threatseer.sensor.spool import Spool  # noqa: E402


def event(sid: str, i: int, t_ns: int = 0) -> dict:
    return {"@timestamp": "2026-11-28T03:00:00.000000Z", "event.kind": "event",
            "event.category": ["process"], "event.type": ["start"], "event.action": "exec",
            "event.id": f"{sid}:{i}:{t_ns}", "process.pid": 1000 + i % 3000,
            "process.executable": f"/usr/bin/tool{i % 40}", "process.name": f"tool{i % 40}",
            "process.args": [f"tool{i % 40}", "-x", str(i % 7)], "process.parent.pid": 1,
            "process.parent.executable": "/bin/bash"}


def cpu_ratio(tmp: Path, bootstrap: str, total: int) -> tuple[float, float]:
    batches = [[event(f"s{k}", i) for i in range(512)] for k in range(total // 512)]
    bundle = load_bundle(str(ROOT / "rules" / "default"))
    cfg = member_config(tmp, bootstrap, "cpu", batches_topic="cpu.b", events_topic="cpu.e",
                        state_topic="cpu.s", scorer_group="cpu.g",
                        transactional_id_prefix="cpu.t")
    cfg.bundle = ""
    cfg.profiles.enabled = False
    # embedded: the same events through the pipeline, one thread, as the hub's loop does
    pipe = Pipeline(cfg.actions, bundle, None)
    import copy

    data = [copy.deepcopy(b) for b in batches]
    t0 = time.process_time()
    for k, evs in enumerate(data):
        for s in range(0, len(evs), 128):
            pipe.score(evs[s:s + 128], f"s{k}", 1, time.time())
    hub_rate = total / (time.process_time() - t0)
    prod = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    sc = Scorer(cfg, bundle)
    for k, evs in enumerate(batches):
        produce_batch(prod, "cpu.b", f"s{k}", 1, evs)
    prod.flush(60)
    sc.start()
    while not sc.owned:
        time.sleep(0.05)
    t0 = time.process_time()
    while sc.emitted < len(batches) * 512:
        time.sleep(0.01)
    scorer_rate = len(batches) * 512 / (time.process_time() - t0)
    sc.stop()
    return scorer_rate, hub_rate


def balance(tmp: Path, bootstrap: str) -> float:
    cfgs = [member_config(tmp, bootstrap, f"bal{i}", batches_topic="bal.b",
                          events_topic="bal.e", state_topic="bal.s", scorer_group="bal.g",
                          transactional_id_prefix="bal.t") for i in (1, 2)]
    for c in cfgs:
        c.bundle = ""
        c.profiles.enabled = False
    scorers = [Scorer(c) for c in cfgs]
    for s in scorers:
        s.start()
    while sum(len(s.owned) for s in scorers) < 12 or not all(s.owned for s in scorers):
        time.sleep(0.1)
    prod = Producer({"bootstrap.servers": bootstrap, "partitioner": "murmur2_random"})
    for k in range(200):
        for seq in range(1, 6):
            produce_batch(prod, "bal.b", f"host-{uuid.uuid5(uuid.NAMESPACE_DNS, str(k))}",
                          seq, [event("x", i) for i in range(20)])
    prod.flush(30)
    deadline = time.monotonic() + 120
    while sum(s.batches for s in scorers) < 1000 and time.monotonic() < deadline:
        time.sleep(0.1)
    counts = [s.batches for s in scorers]
    for s in scorers:
        s.stop()
    print(f"balance: batches per scorer {counts}")
    return min(counts) / max(counts) if max(counts) else 0.0


def latency(tmp: Path, bootstrap: str, rate: int, seconds: float) -> list[float]:
    cfg = member_config(tmp, bootstrap, "lat-gw")
    cfg.bundle = str(ROOT / "rules" / "default")
    gw = Gateway(cfg)
    gw.start()
    sc = Scorer(member_config(tmp, bootstrap, "lat-sc"))
    sc.start()
    while len(sc.owned) < 12:
        time.sleep(0.1)
    got: list[float] = []
    stop = threading.Event()

    def read() -> None:
        c = Consumer({"bootstrap.servers": bootstrap, "group.id": uuid.uuid4().hex,
                      "isolation.level": "read_committed", "fetch.wait.max.ms": 5})
        c.assign([TopicPartition("threatseer.events", p, 0) for p in range(12)])
        import msgspec

        while not stop.is_set():
            for m in c.consume(100, 0.05):
                if m.error():
                    continue
                now = time.time_ns()
                for ev in msgspec.msgpack.decode(m.value()):
                    got.append((now - int(ev["event.id"].rsplit(":", 1)[1])) / 1e6)
        c.close()

    reader = threading.Thread(target=read)
    reader.start()
    sinks = [HubSink(gw.endpoint, f"lat{k}", "h", spool=Spool(str(tmp / f"sp{k}.db")),
                     resend_after_s=5) for k in range(4)]
    per_batch = 50  # 4 sensors x 50 events every 20 ms = 10k/s
    t0 = time.monotonic()
    n = 0
    while time.monotonic() - t0 < seconds:
        for k, s in enumerate(sinks):
            s.send([event(f"lat{k}", n + i, time.time_ns()) for i in range(per_batch)])
        n += per_batch
        nxt = t0 + n * len(sinks) / rate
        while time.monotonic() < nxt:
            for s in sinks:
                s.flush(0.002)
    time.sleep(2)
    stop.set()
    reader.join()
    for s in sinks:
        s.close(1)
    sc.stop()
    gw.stop()
    return got


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=100_000)
    ap.add_argument("--seconds", type=float, default=10)
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="ts-cluster-bench-"))
    srv = tansu_at(free_port(), tmp).start()
    try:
        scorer_rate, hub_rate = cpu_ratio(tmp, srv.bootstrap, a.events)
        print(f"events per CPU-second: scorer {scorer_rate:,.0f}  embedded pipeline "
              f"{hub_rate:,.0f}  ratio {scorer_rate / hub_rate:.2f}")
        bal = balance(tmp, srv.bootstrap)
        lat = sorted(latency(tmp, srv.bootstrap, 10_000, a.seconds))
        p50 = lat[len(lat) // 2] if lat else float("nan")
        p99 = lat[int(len(lat) * 0.99)] if lat else float("nan")
        print(f"end-to-end at 10k events/s: {len(lat)} events, p50 {p50:.1f} ms, p99 "
              f"{p99:.1f} ms (goal <= 50)")
        print(f"per_scorer_ratio={scorer_rate / hub_rate:.2f} balance={bal:.2f} "
              f"p99_ms={p99:.1f}")
    finally:
        srv.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
