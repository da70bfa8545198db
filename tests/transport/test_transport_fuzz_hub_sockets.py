"""Fuzz the hub's sockets with 100,000 random, truncated and mutated frames (a seeded random
generator: hypothesis would spend minutes generating 100k examples), over CURVE from an allowed
key, plus raw TCP garbage at both ports. The hub stays up, a real sensor streaming meanwhile
loses nothing, and every good batch interleaved with the garbage is delivered."""

from __future__ import annotations

import collections
import random
import socket
import time

import msgpack
import zmq
from transport_helpers import (
    Collector,
    HubProc,
    Keys,
    SensorProc,
    hub_cfg,
    keypair,
    ledger_rows,
    public,
    wait_for,
)

from threatseer.common import ecs, wire
from threatseer.common.keys import curve_client

N_FRAMES = 100_000


def good_event(i: int) -> dict:
    cat, typ = ecs.CATEGORIES["exec"]
    return {"@timestamp": "2026-11-28T03:00:00Z", "event.kind": "event",
            "event.category": cat, "event.type": typ, "event.action": "exec",
            "event.id": f"fuzzok:{i}", "process.pid": 7, "process.executable": "/bin/x",
            "process.args": ["x", str(i)], "process.parent.pid": 1}


def garbage(rng: random.Random, template: list[bytes]) -> list[bytes]:
    kind = rng.randrange(6)
    if kind == 0:  # random frames
        return [rng.randbytes(rng.randrange(0, 300)) for _ in range(rng.randrange(1, 4))]
    if kind == 1:  # truncated header or body
        h, b = template
        return [h[: rng.randrange(len(h))], b] if rng.random() < 0.5 else \
               [h, b[: rng.randrange(len(b))]]
    if kind == 2:  # bit flips
        frames = [bytearray(f) for f in template]
        for _ in range(rng.randrange(1, 8)):
            f = frames[rng.randrange(2)]
            f[rng.randrange(len(f))] ^= 1 << rng.randrange(8)
        return [bytes(f) for f in frames]
    if kind == 3:  # well-formed msgpack, wrong types and values
        header = {"v": rng.choice([1, 2, "1", None]), "sid": rng.choice(["fuzzmut", "", 5,
                  "x" * 200]), "seq": rng.choice([-1, 0, 2**64 - 1, "1", rng.randrange(10**6)]),
                  "n": rng.choice([-1, 1, 10**9, None]), "e": rng.choice([-5, "e", 0]),
                  "b": rng.choice([None, -1, 3]), "c": rng.choice([{}, [], {1: 2}, "c"])}
        return [msgpack.packb(header), msgpack.packb(rng.choice([[], [1], [{}], {}, "x"]))]
    if kind == 4:  # too many or too few frames
        return template * rng.randrange(2, 4) if rng.random() < 0.5 else template[:1]
    # a header that passes, events that do not (schema)
    return [template[0], msgpack.packb([{"event.action": "exec"}, None, 3])]


def test_fuzzed_frames_leave_the_hub_up_and_good_events_delivered(tmp_path, procs) -> None:
    keys = Keys(tmp_path / "keys")
    fuzz_secret, fuzz_public = keypair(tmp_path / "keys", "fuzzer")
    ok_secret, ok_public = keypair(tmp_path / "keys", "fuzzok")
    keys.allow.write_text(keys.allow.read_text() + public(fuzz_public).decode() + "  # fuzz\n"
                          + public(ok_public).decode() + "  # fuzzok\n")
    cfg = hub_cfg(tmp_path, keys)
    # Every fuzzed frame must reach the decoders: the penalty box would refuse the fuzzing key
    # unread after 20 of them and take a few hundred a second (tests/security/test_flood.py)
    cfg["ingest"]["penalty_strikes"] = 0
    hub = HubProc(tmp_path, cfg).start()
    procs.append(hub)
    sub = Collector(cfg["publish"]["endpoint"], keys.subscriber[0], keys.hub[1])
    sensor = SensorProc(tmp_path, cfg["ingest"]["endpoint"], "steady", 20_000, keys,
                        rate=4_000, batch=200).start()
    procs.append(sensor)
    ctx = zmq.Context()

    def dealer_with(secret) -> zmq.Socket:  # type: ignore[no-untyped-def]
        d = ctx.socket(zmq.DEALER)
        sec = secret.read_text().split()[0].encode()
        curve_client(d, sec, public(keys.hub[1]))
        d.setsockopt(zmq.LINGER, 5000)
        d.setsockopt(zmq.RCVHWM, 10)  # acks: not read, dropped
        d.connect(cfg["ingest"]["endpoint"])
        return d

    # one key, one sensor id: the garbage comes as "fuzzmut" (or ids it mutates into, refused
    # as spoofed), the good batches between it as "fuzzok" with a key of their own
    dealer, good_dealer = dealer_with(fuzz_secret), dealer_with(ok_secret)
    rng = random.Random(20261128)
    template = wire.encode(wire.Batch("fuzzmut", 1, [good_event(-1)] * 3, host="h"))
    good_seq = good_events = 0
    ingest_port = int(cfg["ingest"]["endpoint"].rsplit(":", 1)[1])
    publish_port = int(cfg["publish"]["endpoint"].rsplit(":", 1)[1])
    try:
        for n in range(N_FRAMES):
            dealer.send_multipart(garbage(rng, template))
            if n % 200 == 0:  # a good batch between the garbage
                good_seq += 1
                events = [good_event(good_events + k) for k in range(5)]
                good_events += 5
                good_dealer.send_multipart(wire.encode(wire.Batch("fuzzok", good_seq, events)))
            if n % 500 == 0:  # raw bytes at the TCP ports: not even ZMTP
                for p in (ingest_port, publish_port):
                    with socket.create_connection(("127.0.0.1", p), timeout=2) as s:
                        s.sendall(rng.randbytes(rng.randrange(1, 200)))
        assert sensor.wait(60) == 0, sensor.log.read_text()
        wait_for(lambda: sum(n for _e, _s, n in ledger_rows(cfg["state_dir"], "fuzzok"))
                 >= good_events, 60, "the good batches between the garbage")
        time.sleep(0.5)
        assert hub.proc.poll() is None, hub.log_text()[-3000:]

        def counted() -> dict | None:  # status.json is rewritten every 2 s
            s = hub.status()
            seen = sum(sum(st["bad"].values()) + st["duplicates"]
                       for st in s["sensors"].values())
            return s if seen > 0.9 * N_FRAMES else None

        status = wait_for(counted, 15, "the garbage counted in status.json")
    finally:
        dealer.close()
        good_dealer.close()
        ctx.term()
        sub.close()
    assert hub.stop() == 0
    assert "Traceback" not in hub.log_text()
    assert status["failures"] == 0
    sensors = status["sensors"].values()
    bad = sum(sum(st["bad"].values()) for st in sensors)
    dups = sum(st["duplicates"] for st in sensors)
    reasons: collections.Counter[str] = collections.Counter()
    for st in sensors:
        reasons.update(st["bad"])
    print(f"garbage counted: bad {bad}, duplicate {dups}; by reason {dict(reasons)}")
    # the garbage was seen and counted, not silently ignored (the rest decoded as batches)
    assert bad + dups > 0.9 * N_FRAMES
    ids = set(sub.ids)
    assert {f"fuzzok:{i}" for i in range(good_events)} <= ids
    assert {f"steady:{i}" for i in range(20_000)} <= ids
    rows = ledger_rows(cfg["state_dir"], "steady")
    assert [s for _e, s, _n in rows] == list(range(1, 101))
