"""Queueing behaviour against a real redis-server that is down, then comes up: each overflow
policy, routing, and a dead output not holding back a healthy one."""

from __future__ import annotations

import io
import json
import threading
import time
from pathlib import Path
from typing import Any

import redis

from tests.outputs.conftest import make_event, wait_for
from threatseer.hub.outputs import OutputConfig, Outputs


def redis_output(url: str, spill_dir: str, **kw: Any) -> OutputConfig:
    options = {"url": url, "mode": "list", "key": "ev", "timeout_s": 1.0}
    return OutputConfig(type="redis", name=kw.pop("name", "redis"), options=options,
                        spill_dir=spill_dir, retry_max_s=0.3, flush_interval_s=0.1, **kw)


def list_ids(url: str, key: str = "ev") -> list[str]:
    r = redis.Redis.from_url(url)
    return [json.loads(x)["event"]["id"] for x in r.lrange(key, 0, -1)]


def by_name(outs: Outputs, name: str) -> dict[str, Any]:
    return next(s for s in outs.status() if s["name"] == name)


def test_drop_oldest_keeps_the_newest_and_counts(redis_at: Any, spill_dir: str) -> None:
    server = redis_at()  # not started: the output is dead
    outs = Outputs([redis_output(server.url, spill_dir, queue_size=10, batch_size=5,
                                 overflow="drop-oldest")])
    outs.start()
    for i in range(100):
        outs.emit(make_event(i))
    st = by_name(outs, "redis")
    assert not st["connected"]
    # The queue's 10 plus up to one batch (5) held by the worker's retry loop; the rest
    # were dropped.
    assert 10 <= st["queue_depth"] <= 15
    assert st["dropped"] == 100 - st["queue_depth"]
    server.start()
    wait_for(lambda: by_name(outs, "redis")["queue_depth"] == 0, what="queue drained")
    outs.close(5)
    st = by_name(outs, "redis")
    ids = list_ids(server.url)
    assert st["sent"] == len(ids) and st["sent"] + st["dropped"] == 100
    assert ids[-10:] == [f"ev-{i}" for i in range(90, 100)]  # the newest survived, in order
    assert st["connected"]


def test_block_waits_for_room_and_loses_nothing(redis_at: Any, spill_dir: str) -> None:
    server = redis_at()
    outs = Outputs([redis_output(server.url, spill_dir, queue_size=5, batch_size=5,
                                 overflow="block")])
    outs.start()
    emitted = []

    def pipeline() -> None:
        for i in range(50):
            outs.emit(make_event(i))
            emitted.append(i)

    t = threading.Thread(target=pipeline, daemon=True)
    t.start()
    time.sleep(1.0)
    assert t.is_alive(), "emit should block while the output is down and its queue full"
    assert len(emitted) <= 5 + 5 + 1  # queue + the batch in the worker's hands
    server.start()
    t.join(20)
    assert not t.is_alive()
    outs.close(10)
    st = by_name(outs, "redis")
    assert (st["sent"], st["dropped"]) == (50, 0)
    assert list_ids(server.url) == [f"ev-{i}" for i in range(50)]


def test_spill_to_disk_then_replay_in_order(redis_at: Any, spill_dir: str) -> None:
    server = redis_at()
    outs = Outputs([redis_output(server.url, spill_dir, queue_size=10, batch_size=4,
                                 overflow="spill")])
    outs.start()
    for i in range(200):
        outs.emit(make_event(i))
    st = by_name(outs, "redis")
    assert st["dropped"] == 0
    assert st["spilled"] >= 200 - 10 - 4
    assert st["spill_depth"] == st["spilled"]
    spill = Path(spill_dir) / "redis.spill"
    assert sum(1 for _ in spill.open()) == st["spilled"]
    server.start()
    wait_for(lambda: by_name(outs, "redis")["queue_depth"] == 0, what="spill replayed")
    outs.close(5)
    assert list_ids(server.url) == [f"ev-{i}" for i in range(200)]
    assert spill.stat().st_size == 0  # emptied once replayed


def test_spill_survives_a_hub_restart(redis_at: Any, spill_dir: str) -> None:
    server = redis_at()
    cfg = redis_output(server.url, spill_dir, queue_size=5, batch_size=5, overflow="spill")
    outs = Outputs([cfg])
    outs.start()
    for i in range(40):
        outs.emit(make_event(i))
    outs.close(0.5)  # output still down: what is left goes to disk
    st = by_name(outs, "redis")
    assert st["dropped"] == 0 and st["sent"] == 0
    server.start()
    again = Outputs([cfg])
    again.start()
    wait_for(lambda: by_name(again, "redis")["sent"] == 40, what="replay after restart")
    again.close(5)
    assert sorted(list_ids(server.url), key=lambda s: int(s[3:])) == [
        f"ev-{i}" for i in range(40)]


def test_spill_file_is_bounded(redis_at: Any, spill_dir: str) -> None:
    server = redis_at()
    outs = Outputs([redis_output(server.url, spill_dir, queue_size=1, batch_size=1,
                                 overflow="spill", spill_max_mb=1)])
    outs.start()
    big = "x" * 10_000
    for i in range(300):  # ~3 MB of events against a 1 MiB file
        outs.emit(make_event(i, **{"process.command_line": big}))
    st = by_name(outs, "redis")
    assert st["dropped"] > 150
    assert (Path(spill_dir) / "redis.spill").stat().st_size <= 1024 * 1024
    outs.close(0.2)


def test_dead_output_does_not_block_a_healthy_one(redis_at: Any, redis_server: Any,
                                                   spill_dir: str) -> None:
    dead = redis_at()  # never started
    stream = io.StringIO()
    outs = Outputs([
        redis_output(dead.url, spill_dir, name="dead", queue_size=20, overflow="drop-oldest"),
        redis_output(redis_server.url, spill_dir, name="healthy", queue_size=20, overflow="block"),
        OutputConfig(type="stdout", options={"format": "json"}, queue_size=20, overflow="block"),
    ], stdout={"stream": stream})
    outs.start()
    t0 = time.monotonic()
    for i in range(1000):
        outs.emit(make_event(i))
    elapsed = time.monotonic() - t0
    wait_for(lambda: by_name(outs, "healthy")["sent"] == 1000, what="healthy output")
    outs.close(1)
    assert len(list_ids(redis_server.url)) == 1000
    assert len(stream.getvalue().splitlines()) == 1000
    dead_st = by_name(outs, "dead")
    assert dead_st["sent"] == 0 and dead_st["dropped"] >= 1000 - 20 - 500
    assert not dead_st["connected"] and dead_st["last_error"]
    assert elapsed < 60  # sanity: not waiting on the dead output's timeouts


def test_routing_by_score_kind_and_category(tmp_path: Path) -> None:
    streams = {n: io.StringIO() for n in ("all", "alerts", "high", "net")}
    outs = Outputs([
        OutputConfig(type="stdout", name="all"),
        OutputConfig(type="stdout", name="alerts", kinds=["alert"]),
        OutputConfig(type="stdout", name="high", min_score=90),
        OutputConfig(type="stdout", name="net", categories=["network"], min_score=50),
    ], **{n: {"stream": s} for n, s in streams.items()})
    outs.start()
    events = [make_event(i) for i in range(200)]
    for e in events:
        outs.emit(e)
    outs.close(5)

    def got(name: str) -> list[str]:
        return [json.loads(line)["event"]["id"] for line in streams[name].getvalue().splitlines()]

    def want(pred: Any) -> list[str]:
        return [e["event.id"] for e in events if pred(e)]

    assert got("all") == want(lambda e: True)
    assert got("alerts") == want(lambda e: e["event.kind"] == "alert")
    assert got("high") == want(lambda e: e["event.risk_score"] >= 90)
    assert got("net") == want(lambda e: "network" in e["event.category"]
                              and e["event.risk_score"] >= 50)
    assert len(got("net")) == 50
