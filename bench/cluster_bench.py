"""The hub cluster on a real Kafka-protocol broker (tansu): scorer cost against the embedded
hub, balance, end-to-end latency, and the per-event costs docs/cluster.md sizes from.

Every phase uses bench/hub_bench.py's recorded mix and its bundle (rules/default + the SigmaHQ
Linux rules, the profile engine learning then scoring), and the same hub settings.

1. Events per CPU-second. The embedded hub: a real ``threatseer hub`` process, flooded by
   sensor processes, its CPU (all threads, /proc) per event it published, exactly as
   hub_bench.py measures it. The cluster: real ``threatseer gateway`` and ``threatseer scorer``
   processes sharing one hub.yaml, flooded by the same sensors through the gateway; the CPU of
   each process per event committed to the events topic. Each is run ``--repeat`` times as
   new sensors (the first run learns the profiles: cold); the ratio is best run against best
   run (the least disturbed on a shared machine), and is printed for the medians too.
   Also measured: bytes per event stored in the batches and events topics (record keys,
   values and headers; the broker's own framing, ~70 B per record batch, comes on top).
2. Balance: two scorers share the batches of 200 sensors; min/max of their batch counts.
3. End-to-end latency at 10k events/s: 4 sensors (HubSink, spooled, acks read) in a process of
   their own -> gateway -> Kafka -> scorer -> events topic, received by a read_committed
   consumer; each event carries its send time. The embedded hub's sensor -> PUB latency at
   the same rate is printed beside it (hub_bench.py's latency phase), and the CPU the broker,
   gateway and scorer used meanwhile.
4. The broker alone (the floor under phase 3): one hop (idempotent acks=all producer ->
   read_committed reader) and one scorer-like transaction, with the cluster's client
   settings and no scoring, at 400 records/s (phase 3's batches per second).

Run:        .venv/bin/python bench/cluster_bench.py [--events 50000] [--repeat 3]
Last line:  per_scorer_ratio=... balance=... p99_ms=... (then the measured costs)
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import lz4.frame
import msgpack
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "cluster"))
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT))

import hub_bench  # noqa: E402
from cluster_helpers import free_port, member_config, produce_batch, tansu_at  # noqa: E402
from confluent_kafka import Consumer, Producer, TopicPartition  # noqa: E402

from threatseer.hub.cluster.kafka import take  # noqa: E402
from threatseer.hub.cluster.scorer import Scorer  # noqa: E402

PARTITIONS = 12
LZ4_MAGIC = b"\x04\x22\x4d\x18"
EVENTS_TOPIC = "threatseer.events"
BATCHES_TOPIC = "threatseer.batches"
STATE_TOPIC = "threatseer.scorer-state"


# -- the cluster's processes ----------------------------------------------------------------
def cluster_config(tmp: Path, bootstrap: str, bundle: str,
                   txn_interval_ms: int | None = None) -> Path:
    """One hub.yaml for the gateway and the scorer: hub_bench.py's hub settings + cluster."""
    cfg = {"ingest": {"endpoint": f"tcp://127.0.0.1:{free_port()}", "rcv_hwm": 1000},
           "publish": {"endpoint": ""}, "metrics": {"listen": ""}, "plaintext": True,
           "actions": {"toss_below": -1_000_000, "alert_at": 80},
           "profiles": {"enabled": True, "learn_seconds": 0, "learn_min_events": 50},
           "state_dir": str(tmp / "state"), "log_level": "warning", "bundle": bundle,
           "admin": {"allow_unsigned": True},  # the repository's bundle, unsigned
           "cluster": {"bootstrap_servers": bootstrap, "replication_factor": 1,
                       "partitions": PARTITIONS, "session_timeout_ms": 3000,
                       "metrics_listen": {"gateway": "", "scorer": "", "output-worker": ""}}}
    if txn_interval_ms is not None:
        cfg["cluster"]["txn_interval_ms"] = txn_interval_ms
    path = tmp / "cluster.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


class Role:
    """``threatseer <role> -c config`` as a process of its own, ready when it says so."""

    def __init__(self, role: str, config: Path, tmp: Path) -> None:
        self.role = role
        self.log = tmp / f"{role}.log"
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen([hub_bench.THREATSEER, role, "-c", str(config)],
                                         stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 180
        while f"{role} ready".encode() not in self.log.read_bytes():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise SystemExit(f"{role} did not start: {self.log.read_text()[-2000:]}")
            time.sleep(0.1)

    def cpu(self) -> float:
        return hub_bench.cpu_seconds(self.proc.pid)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds of a process's threads by kind: its Python threads (named after the
    process), librdkafka's (rdk:*), ZeroMQ's (ZMQbg/*)."""
    out: dict[str, float] = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            stat = Path(f"/proc/{pid}/task/{tid}/stat").read_text()
        except OSError:
            continue
        name = stat[stat.index("(") + 1:stat.rindex(")")]
        kind = "rdkafka" if name.startswith("rdk:") else "zeromq" if name.startswith("ZMQ") \
            else "python"
        f = stat.rpartition(")")[2].split()
        out[kind] = out.get(kind, 0.0) + (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")
    return out


def events_reader(bootstrap: str, fetch_wait_ms: int = 5) -> Consumer:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "bench-" + uuid.uuid4().hex,
                  "isolation.level": "read_committed", "enable.auto.commit": False,
                  "fetch.wait.max.ms": fetch_wait_ms})
    c.assign([TopicPartition(EVENTS_TOPIC, p, 0) for p in range(PARTITIONS)])
    return c


def array_length(value: bytes) -> int:
    """The item count of a msgpack array, from its header alone (as hub_bench counts)."""
    head = value[0]
    if head & 0xF0 == 0x90:
        return head & 0x0F
    if head == 0xDC:
        return int.from_bytes(value[1:3], "big")
    if head == 0xDD:
        return int.from_bytes(value[1:5], "big")
    raise SystemExit(f"events record is not a msgpack array (first byte {head:#x})")


def record_bytes(m: Any) -> int:
    return (len(m.value() or b"") + len(m.key() or b"")
            + sum(len(k) + len(v or b"") for k, v in m.headers() or ()))


def topic_bytes(bootstrap: str, topic: str, idle_s: float = 2.0) -> tuple[int, int]:
    """Key + value + header bytes of every record in ``topic`` (read_uncommitted: all), as
    read, and with each value LZ4-compressed (about what a broker stores of a producer's
    LZ4 record batches; the scorers compress events, sensors compress their batches)."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "bench-" + uuid.uuid4().hex,
                  "enable.auto.commit": False})
    c.assign([TopicPartition(topic, p, 0) for p in range(PARTITIONS)])
    total = packed = 0
    last = time.monotonic()
    try:
        while time.monotonic() - last < idle_s:
            for m in take(c, 1000, 0.2):
                if not m.error():
                    size = record_bytes(m)
                    value = m.value() or b""
                    total += size
                    small = value if value[:4] == LZ4_MAGIC else lz4.frame.compress(value)
                    packed += size - len(value) + len(small)
                    last = time.monotonic()
    finally:
        c.close()
    return total, packed


# -- phase 1: CPU per event -----------------------------------------------------------------
def flood_sender(endpoint: str, sensor_id: str, events: list[dict[str, Any]], rounds: int,
                 go: Any) -> None:
    """hub_bench.py's flood sender, reading the gateway's acks as a sensor does, and done
    when its last batch is acknowledged (a gateway acks every batch Kafka stored: a sender
    that never reads them fills its socket, and ZeroMQ then lost the last batches at close)."""
    import zmq

    from threatseer.common import wire

    ctx = zmq.Context()
    sock = hub_bench.sender_socket(ctx, endpoint, 100)
    bodies = [(wire.encode_body(events[o:o + hub_bench.BATCH]),
               len(events[o:o + hub_bench.BATCH]))
              for o in range(0, len(events), hub_bench.BATCH)]
    go.wait()
    seq, acked, last = 0, 0, rounds * len(bodies)
    poller = zmq.Poller()
    poller.register(sock, zmq.POLLIN | zmq.POLLOUT)
    deadline = None
    while acked < last:
        flags = dict(poller.poll(1000)).get(sock, 0)
        if flags & zmq.POLLIN:
            while sock.get(zmq.EVENTS) & zmq.POLLIN:
                reply = wire.decode_reply(sock.recv_multipart()[-1])
                if isinstance(reply, tuple):  # an ack (commands are not for a bench)
                    acked = max(acked, reply[1])
        if flags & zmq.POLLOUT and seq < last:
            body, count = bodies[seq % len(bodies)]
            seq += 1
            sock.send_multipart(hub_bench.frames_of(sensor_id, seq, body, count))
        if seq == last and deadline is None:
            deadline = time.monotonic() + 60
        if deadline is not None and time.monotonic() > deadline:
            print(f"WARNING: {sensor_id}: batches {acked + 1}-{last} not acknowledged")
            break
    sock.close(linger=0)
    ctx.term()


def hub_runs(tmp: Path, bundle: str, events: list[dict[str, Any]], senders: int, rounds: int,
             repeat: int, rate: int, seconds: float) -> tuple[list[float], float, float]:
    """The embedded hub, as hub_bench.py measures it: events per CPU-s per run, p50, p99."""
    hub, ingest, pub = hub_bench.start_hub(str(tmp), bundle)
    try:
        runs = [hub_bench.throughput(ingest, pub, hub.pid, events, senders, rounds, run)[1]
                for run in range(repeat)]
        p50, p99, _ = hub_bench.latency(ingest, pub, events, rate, seconds)
    finally:
        hub.terminate()
        hub.wait(30)
    return runs, p50, p99


def cluster_run(endpoint: str, bootstrap: str, reader: Consumer, gateway: Role, scorer: Role,
                events: list[dict[str, Any]], senders: int, rounds: int, run: int,
                seen: list[int]) -> tuple[float, float]:
    """One flood through gateway and scorer; (scorer, gateway) events per CPU-second."""
    go = mp.Event()
    procs = [mp.Process(target=flood_sender,
                        args=(endpoint, f"sensor-{run}-{k}", events, rounds, go))
             for k in range(senders)]
    for p in procs:
        p.start()
    time.sleep(1.0)  # senders encode their batches first
    total = senders * rounds * len(events)
    target = seen[0] + total
    s0, g0 = scorer.cpu(), gateway.cpu()
    threads0 = thread_cpu(scorer.proc.pid)
    t0 = time.perf_counter()
    go.set()
    last = time.monotonic()
    while seen[0] < target and time.monotonic() - last < 30:
        for m in take(reader, 1000, 0.2):
            if not m.error():
                seen[0] += array_length(m.value())
                last = time.monotonic()
    wall = time.perf_counter() - t0
    s_cpu, g_cpu = scorer.cpu() - s0, gateway.cpu() - g0
    threads = {k: v - threads0.get(k, 0.0) for k, v in thread_cpu(scorer.proc.pid).items()}
    for p in procs:
        p.join()
    got = total - (target - seen[0])
    if got < total:
        print(f"WARNING: {got} of {total} events reached the events topic")
    print(f"cluster run {run + 1}: {got} events in {wall:.2f} s wall; scorer CPU {s_cpu:.2f} s "
          f"= {got / s_cpu:,.0f} events per CPU-second; gateway CPU {g_cpu:.2f} s = "
          f"{got / g_cpu:,.0f} events per CPU-second; scorer threads: "
          + ", ".join(f"{k} {v:.2f} s" for k, v in sorted(threads.items())))
    return got / s_cpu, got / g_cpu


# -- phase 2: balance -----------------------------------------------------------------------
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
    deadline = time.monotonic() + 120
    while (sum(len(s.owned) for s in scorers) < PARTITIONS or not all(s.owned for s in scorers)
           ) and time.monotonic() < deadline:
        time.sleep(0.1)
    prod = Producer({"bootstrap.servers": bootstrap, "partitioner": "murmur2_random"})
    events = hub_bench.make_events(20)
    for k in range(200):
        for seq in range(1, 6):
            produce_batch(prod, "bal.b", f"host-{uuid.uuid5(uuid.NAMESPACE_DNS, str(k))}",
                          seq, events)
    prod.flush(30)
    deadline = time.monotonic() + 120
    while sum(s.batches for s in scorers) < 1000 and time.monotonic() < deadline:
        time.sleep(0.1)
    counts = [s.batches for s in scorers]
    owned = [len(s.owned) for s in scorers]
    for s in scorers:
        s.stop()
    print(f"balance: 200 sensors' batches per scorer {counts} (partitions {owned})")
    return min(counts) / max(counts) if max(counts) else 0.0


# -- phase 3: latency -----------------------------------------------------------------------
def paced_sensors(endpoint: str, events: list[dict[str, Any]], rate: int, seconds: float,
                  spool_dir: str, go: Any) -> None:
    """4 sensors (HubSink: spooled, acks read) sending ``rate`` events/s, a batch each every
    10 ms, every event stamped with its send time."""
    from threatseer.sensor.ship import HubSink
    from threatseer.sensor.spool import Spool

    sinks = [HubSink(endpoint, f"paced-{k}", "bench-host", resend_after_s=5,
                     spool=Spool(os.path.join(spool_dir, f"paced-{k}.db")))
             for k in range(4)]
    per = rate // 100 // len(sinks)
    go.wait()
    start, tick, pos = time.monotonic(), 0, 0
    while time.monotonic() - start < seconds:
        tick += 1
        for s in sinks:
            batch = [dict(e) for e in events[pos:pos + per]]
            pos = (pos + per) % (len(events) - per)
            now = time.time_ns()
            for e in batch:
                e["event.sequence"] = now  # the send time (ns), as hub_bench.py stamps it
            s.send(batch)
        while time.monotonic() < start + tick * 0.01:
            for s in sinks:
                s.flush()
            time.sleep(0.001)
    deadline = time.monotonic() + 10
    while any(s.pending for s in sinks) and time.monotonic() < deadline:
        for s in sinks:
            s.flush(0.01)
    for s in sinks:
        s.close()


def latency(endpoint: str, bootstrap: str, events: list[dict[str, Any]], rate: int,
            seconds: float, tmp: Path, pids: dict[str, int]
            ) -> tuple[list[float], list[float], list[float], dict[str, float]]:
    """Send -> read, send -> events record created (scored, at the produce in the scoring
    transaction), record created -> read (the commit, then the reader's fetch); ms, sorted.
    Also the CPU seconds each process of ``pids`` (name -> pid) used meanwhile."""
    reader = events_reader(bootstrap)
    while take(reader, 1000, 0.5):  # what the throughput phase left
        pass
    go = mp.Event()
    proc = mp.Process(target=paced_sensors, args=(endpoint, events, rate, seconds, str(tmp), go))
    proc.start()
    time.sleep(0.5)
    cpu0 = {name: hub_bench.cpu_seconds(pid) for name, pid in pids.items()}
    go.set()
    lat: list[float] = []
    scored: list[float] = []
    read: list[float] = []
    last = time.monotonic()
    unpack = msgpack.unpackb
    while proc.is_alive() or time.monotonic() - last < 3:
        for m in take(reader, 1000, 0.2):
            if m.error():
                continue
            now = time.time_ns()
            created = m.timestamp()[1] * 1_000_000
            last = time.monotonic()
            for ev in unpack(m.value(), raw=False):
                sent = ev.get("event.sequence")
                if sent:
                    lat.append((now - sent) / 1e6)
                    scored.append((created - sent) / 1e6)
                    read.append((now - created) / 1e6)
    cpu = {name: hub_bench.cpu_seconds(pid) - cpu0[name] for name, pid in pids.items()}
    proc.join()
    reader.close()
    return sorted(lat), sorted(scored), sorted(read), cpu


def broker_floor(bootstrap: str, rate: int = 400, seconds: float = 5.0,
                 fetch_wait_ms: int = 5) -> dict[str, list[float]]:
    """What the broker alone costs, with the clients set as the cluster sets them, at
    ``rate`` records/s (the latency phase's batches per second):

    - ``hop``: an idempotent acks=all producer (the gateway's) -> a read_committed consumer
      (the scorer's fetch wait): one Kafka hop, record created -> read;
    - ``txn``: a transaction as a scorer commits it (one record, its consumed offset:
      begin, produce, send_offsets_to_transaction, commit), begin -> commit returned;
    - ``txn_hop``: that transaction's record created -> read by a read_committed reader.
    Each in ms, sorted. No scoring, no sensors, no gateway: what is left is the broker and
    the Kafka client on this machine at this moment."""
    topic, group = "floor." + uuid.uuid4().hex[:8], "floor-" + uuid.uuid4().hex[:8]
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})
    for fut in admin.create_topics([NewTopic(topic, 1, 1), NewTopic(topic + ".in", 1, 1)]).values():
        fut.result(20)
    prod = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all",
                     "linger.ms": 1})
    txp = Producer({"bootstrap.servers": bootstrap, "transactional.id": topic, "acks": "all",
                    "linger.ms": 100})
    txp.init_transactions(30)
    src = Consumer({"bootstrap.servers": bootstrap, "group.id": group,
                    "enable.auto.commit": False})
    meta = src.consumer_group_metadata()
    reader = Consumer({"bootstrap.servers": bootstrap, "group.id": group + "-r",
                       "isolation.level": "read_committed", "enable.auto.commit": False,
                       "fetch.wait.max.ms": fetch_wait_ms, "auto.offset.reset": "latest"})
    reader.assign([TopicPartition(topic, 0, 0)])
    out: dict[str, list[float]] = {"hop": [], "txn": [], "txn_hop": []}
    try:
        time.sleep(1.0)
        start, n = time.monotonic(), 0
        while time.monotonic() - start < seconds:
            n += 1
            txn = n % 2 == 0
            if txn:
                t0 = time.perf_counter()
                txp.begin_transaction()
                txp.produce(topic, value=b"t" + str(time.time_ns()).encode())
                txp.send_offsets_to_transaction([TopicPartition(topic + ".in", 0, n)], meta, 30)
                txp.commit_transaction(30)
                out["txn"].append((time.perf_counter() - t0) * 1000)
            else:
                prod.produce(topic, value=b"p" + str(time.time_ns()).encode())
                prod.poll(0)
            for m in take(reader, 100, 0):
                if not m.error():
                    v = m.value()
                    out["txn_hop" if v[:1] == b"t" else "hop"].append(
                        (time.time_ns() - int(v[1:])) / 1e6)
            while time.monotonic() < start + n / rate:
                for m in take(reader, 100, 0.001):
                    if not m.error():
                        v = m.value()
                        out["txn_hop" if v[:1] == b"t" else "hop"].append(
                            (time.time_ns() - int(v[1:])) / 1e6)
    finally:
        prod.flush(5)
        reader.close()
        src.close()
    return {k: sorted(v) for k, v in out.items()}


def pct(values: list[float], q: float) -> float:
    return values[min(len(values) - 1, int(len(values) * q))] if values else float("nan")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=50_000, help="distinct events in the mix")
    ap.add_argument("--senders", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=2, help="times each sender sends the mix")
    ap.add_argument("--repeat", type=int, default=3, help="throughput runs of each")
    ap.add_argument("--rate", type=int, default=10_000)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--txn-interval-ms", type=int, default=None,
                    help="the scorer's cluster.txn_interval_ms (default: the config default)")
    ap.add_argument("--latency-only", action="store_true",
                    help="only the cluster's latency phase (no key line)")
    a = ap.parse_args()
    mp.set_start_method("fork")
    print(f"load before: {os.getloadavg()[0]:.1f} (1 min), {os.cpu_count()} CPUs; scorer "
          f"txn_interval_ms {a.txn_interval_ms if a.txn_interval_ms is not None else 'default'}")
    events = hub_bench.make_events(a.events)
    tmp = Path(tempfile.mkdtemp(prefix="ts-cluster-bench-"))
    bundle = hub_bench.build_bundle(str(tmp))

    (tmp / "hub").mkdir()
    hub_rates, hub_p50, hub_p99 = hub_runs(tmp / "hub", bundle, events, a.senders, a.rounds,
                                           a.repeat, a.rate, a.seconds) \
        if not a.latency_only else ([1.0], 0.0, 0.0)

    srv = tansu_at(free_port(), tmp).start()
    gateway = scorer = None
    try:
        config = cluster_config(tmp, srv.bootstrap, bundle, a.txn_interval_ms)
        endpoint = yaml.safe_load(config.read_text())["ingest"]["endpoint"]
        gateway = Role("gateway", config, tmp)
        scorer = Role("scorer", config, tmp)
        reader = events_reader(srv.bootstrap, 50)
        seen = [0]
        runs = [cluster_run(endpoint, srv.bootstrap, reader, gateway, scorer, events,
                            a.senders, a.rounds, run, seen)
                for run in range(0 if a.latency_only else a.repeat)] or [(1.0, 1.0)]
        reader.close()
        (batches_b, batches_lz4), (events_b, events_lz4), (state_b, _) = (
            topic_bytes(srv.bootstrap, t) for t in (BATCHES_TOPIC, EVENTS_TOPIC, STATE_TOPIC))
        lat, to_scored, to_read, cpu = latency(
            endpoint, srv.bootstrap, events, a.rate, a.seconds, tmp,
            {"broker": srv.proc.pid, "gateway": gateway.proc.pid, "scorer": scorer.proc.pid})
        print(f"CPU during the latency phase ({len(lat)} events): " + ", ".join(
            f"{k} {v:.2f} s ({v / max(len(lat), 1) * 1e6:.0f} µs/event)" for k, v in cpu.items()))
        floor = broker_floor(srv.bootstrap)
        print("broker alone (tansu, no scoring), p50 / p99 ms: " + "; ".join(
            f"{k} {pct(v, 0.5):.1f} / {pct(v, 0.99):.1f}" for k, v in floor.items())
            + f"  (load {os.getloadavg()[0]:.1f})")
        print(f"latency parts: sent -> scored record p50 {pct(to_scored, 0.5):.1f} ms, p99 "
              f"{pct(to_scored, 0.99):.1f} ms; scored record -> read_committed reader p50 "
              f"{pct(to_read, 0.5):.1f} ms, p99 {pct(to_read, 0.99):.1f} ms")
        gateway.stop()
        scorer.stop()
        bal = balance(tmp, srv.bootstrap) if not a.latency_only else 0.0
    finally:
        for r in (gateway, scorer):
            if r is not None:
                r.stop()
        srv.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"load after: {os.getloadavg()[0]:.1f} (1 min)")

    scorer_rates, gw_rates = [r[0] for r in runs], [r[1] for r in runs]
    best_hub, best_sc = max(hub_rates), max(scorer_rates)
    med_hub, med_sc = statistics.median(hub_rates), statistics.median(scorer_rates)
    n = max(seen[0], 1)
    p50, p99 = pct(lat, 0.5), pct(lat, 0.99)
    print()
    print(f"{'':34}{'embedded hub':>16}{'cluster scorer':>16}{'ratio':>8}")
    print(f"{'events per CPU-second, best run':34}{best_hub:>16,.0f}{best_sc:>16,.0f}"
          f"{best_sc / best_hub:>8.2f}")
    print(f"{'events per CPU-second, median':34}{med_hub:>16,.0f}{med_sc:>16,.0f}"
          f"{med_sc / med_hub:>8.2f}")
    print(f"{'events per CPU-second, first':34}{hub_rates[0]:>16,.0f}{scorer_rates[0]:>16,.0f}"
          f"{scorer_rates[0] / hub_rates[0]:>8.2f}")
    print(f"{'p50 / p99 ms at ' + str(a.rate) + ' events/s':34}"
          f"{f'{hub_p50:.1f} / {hub_p99:.1f}':>16}{f'{p50:.1f} / {p99:.1f}':>16}")
    print(f"gateway: {max(gw_rates):,.0f} events per CPU-second (best), "
          f"{statistics.median(gw_rates):,.0f} (median)")
    print(f"stored per event: batches {batches_b / n:.0f} B ({batches_lz4 / n:.0f} B as LZ4), "
          f"events {events_b / n:.0f} B ({events_lz4 / n:.0f} B as LZ4), scorer state "
          f"{state_b / n:.1f} B ({n} events)")
    print(f"latency: {len(lat)} events, p50 {p50:.1f} ms, p99 {p99:.1f} ms, max "
          f"{lat[-1] if lat else float('nan'):.1f} ms (goal p99 <= 50)")
    print(f"goals: per_scorer_ratio >= 0.8 ({best_sc / best_hub:.2f}), balance >= 0.7 "
          f"({bal:.2f}), p99 <= 50 ms ({p99:.1f})")
    print(f"per_scorer_ratio={best_sc / best_hub:.2f} balance={bal:.2f} p99_ms={p99:.1f} "
          f"per_scorer_ratio_median={med_sc / med_hub:.2f} p50_ms={p50:.1f} "
          f"scorer_events_per_cpu_s={best_sc:.0f} hub_events_per_cpu_s={best_hub:.0f} "
          f"gateway_events_per_cpu_s={max(gw_rates):.0f} "
          f"batches_lz4_bytes_per_event={batches_lz4 / n:.0f} "
          f"events_lz4_bytes_per_event={events_lz4 / n:.0f} "
          f"broker_hop_p50_ms={pct(floor['hop'], 0.5):.1f} "
          f"broker_txn_p50_ms={pct(floor['txn'], 0.5):.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
