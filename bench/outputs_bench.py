"""Events per second through each output, on the same generated stream of scored events.

The script starts its own servers on free ports (redis-server without persistence, the tansu
Kafka broker, noida-db's Elasticsearch API, a json_lines TCP listener standing in for
Logstash), then for each output: one Outputs with only that output, emit the whole stream,
close (which waits until everything is acknowledged), and check the server holds every event.
Figures are end-to-end: emit + serialise + send + acknowledgement. Prints a table; the last
line is ``key=value ...``.

    .venv/bin/python bench/outputs_bench.py [--events N]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the server starters live with the tests

from tests.conftest import free_port  # noqa: E402
from tests.outputs.conftest import (  # noqa: E402
    JsonLinesListener,
    make_event,
    noida_at,
    redis_server_at,
    tansu_at,
)
from threatseer.hub.outputs import OutputConfig, Outputs  # noqa: E402


def run(cfg: OutputConfig, events: list[dict[str, Any]], count: Callable[[], int]) -> dict:
    outs = Outputs([cfg])
    outs.start()
    t0 = time.perf_counter()
    for e in events:
        outs.emit(e)
    emit_s = time.perf_counter() - t0
    outs.close(600)
    total_s = time.perf_counter() - t0
    st = outs.status()[0]
    stored = count()
    return {"eps": len(events) / total_s, "emit_eps": len(events) / emit_s, "sent": st["sent"],
            "stored": stored, "retries": st["retries"], "dropped": st["dropped"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=20000)
    args = ap.parse_args()
    n = args.events
    events = [make_event(i) for i in range(n)]
    work = Path(tempfile.mkdtemp(prefix="outputs-bench-"))
    common = {"overflow": "block", "queue_size": 10000, "batch_size": 500,
              "spill_dir": str(work / "spill")}
    servers = []
    results: dict[str, dict] = {}
    try:
        import redis
        from elasticsearch import Elasticsearch

        rs = redis_server_at(free_port(), work, durable=False).start()
        servers.append(rs)
        kb = tansu_at(free_port(), work).start()
        servers.append(kb)
        es = noida_at(free_port(), work).start()
        servers.append(es)
        ls = JsonLinesListener(free_port()).start()
        r = redis.Redis.from_url(rs.url)
        client = Elasticsearch(es.url)

        def es_count() -> int:
            client.indices.refresh(index="bench")
            return client.count(index="bench")["count"]

        def ls_count() -> int:
            deadline = time.monotonic() + 30
            while len(ls.lines) < n and time.monotonic() < deadline:
                time.sleep(0.05)
            return len(ls.lines)

        cases: list[tuple[str, OutputConfig, Callable[[], int]]] = [
            ("file", OutputConfig(type="file", options={"path": str(work / "events.jsonl"),
                                                        "max_bytes": 1 << 30}, **common),
             lambda: sum(1 for _ in (work / "events.jsonl").open())),
            ("redis_list", OutputConfig(type="redis", options={"url": rs.url, "key": "l"},
                                        **common), lambda: r.llen("l")),
            ("redis_stream", OutputConfig(type="redis", options={
                "url": rs.url, "key": "s", "mode": "stream", "maxlen": 10 * n}, **common),
             lambda: r.xlen("s")),
            ("kafka", OutputConfig(type="kafka", options={
                "bootstrap_servers": kb.bootstrap, "topic": "bench"}, **common),
             kafka_stored(kb.bootstrap, n)),
            ("elasticsearch", OutputConfig(type="elasticsearch", options={
                "hosts": [es.url], "index": "bench"}, **common), es_count),
            ("logstash", OutputConfig(type="logstash", options={"port": ls.port}, **common),
             ls_count),
        ]
        for name, cfg, count in cases:
            results[name] = run(cfg, events, count)
            res = results[name]
            print(f"{name:14s} {res['eps']:>10,.0f} events/s end-to-end   "
                  f"emit {res['emit_eps']:>10,.0f}/s   sent {res['sent']}  stored "
                  f"{res['stored']}  retries {res['retries']}  dropped {res['dropped']}",
                  flush=True)
        ls.stop()
    finally:
        for s in servers:
            s.stop()
        shutil.rmtree(work, ignore_errors=True)
    ok = all(res["stored"] == n and res["sent"] == n for res in results.values())
    print(f"events={n} " + " ".join(f"{k}_eps={v['eps']:.0f}" for k, v in results.items())
          + f" all_delivered={int(ok)}")


def kafka_stored(bootstrap: str, n: int) -> Callable[[], int]:
    """Count the messages in topic ``bench`` by consuming from the earliest offsets."""
    import uuid

    from confluent_kafka import Consumer

    def count() -> int:
        c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"bench-{uuid.uuid4()}",
                      "auto.offset.reset": "earliest", "session.timeout.ms": 6000,
                      "enable.auto.commit": False})
        c.subscribe(["bench"])
        got, deadline = 0, time.monotonic() + 60
        try:
            while got < n and time.monotonic() < deadline:
                for m in c.consume(1000, 0.5):
                    if not m.error():
                        got += 1
        finally:
            c.close()
        return got

    return count


if __name__ == "__main__":
    main()
