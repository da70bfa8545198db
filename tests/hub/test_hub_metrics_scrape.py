"""The hub's /metrics scraped from the real process and parsed by Prometheus' own parser: one
metric per quantity, the ingest-to-publish and per-output latency histograms."""

from __future__ import annotations

import time
import urllib.request
from pathlib import Path
from typing import Any

import zmq
from hub_helpers import (
    HubProcess,
    Sender,
    Subscriber,
    endpoint,
    exec_event,
    free_port,
    wait_connected,
    write_yaml,
)
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[2]


def scrape(listen: str) -> dict[str, Any]:
    body = urllib.request.urlopen(f"http://{listen}/metrics", timeout=10).read().decode()
    return {f.name: f for f in text_string_to_metric_families(body)}


def value(fam: Any, suffix: str, **labels: str) -> float:
    for s in fam.samples:
        if s.name == fam.name + suffix and all(s.labels.get(k) == v for k, v in labels.items()):
            return s.value
    raise AssertionError(f"no {fam.name}{suffix} {labels}")


def test_metrics_one_per_quantity_and_latency_histograms(tmp_path: Path,
                                                          threatseer_cmd: list[str]) -> None:
    listen = f"127.0.0.1:{free_port()}"
    cfg = {"ingest": {"endpoint": endpoint()}, "publish": {"endpoint": endpoint()},
           "metrics": {"listen": listen}, "actions": {"toss_below": -1000, "alert_at": 100},
           "bundle": str(ROOT / "rules" / "default"), "admin": {"allow_unsigned": True},
           "state_dir": str(tmp_path / "state"),
           "plaintext": True, "profiles": {"enabled": False},
           "outputs": [{"type": "file", "name": "archive", "flush_interval_s": 0.1,
                        "options": {"path": str(tmp_path / "events.jsonl")}}]}
    hub = HubProcess(threatseer_cmd, write_yaml(tmp_path / "hub.yaml", cfg))
    ctx = zmq.Context()
    try:
        sender = Sender(ctx, cfg["ingest"]["endpoint"], "m1")
        sub = Subscriber(ctx, cfg["publish"]["endpoint"])
        wait_connected(sender, sub)
        before = sender.seq
        for i in range(20):
            sender.send([exec_event("/usr/bin/ls", ["ls", str(i), str(j)]) for j in range(5)])
        assert len(sub.collect(100)) == 100
        families: dict[str, Any] = {}
        for _ in range(50):  # the file output writes within its flush interval
            families = scrape(listen)
            delivered = families["threatseer_output_delivery_seconds"]
            if value(delivered, "_count", output="archive") >= 100 + before * 5:
                break
            time.sleep(0.1)
    finally:
        sub.close()
        sender.close()
        ctx.destroy(linger=0)
        rc, _, err = hub.stop()
    assert rc == 0, err

    names = set(families)
    # one metric per quantity: nothing the outputs export is repeated under threatseer_hub_
    assert "threatseer_hub_output_queue_depth" not in names
    for name in names:
        if name.startswith("threatseer_hub_"):
            assert "threatseer_" + name.removeprefix("threatseer_hub_") not in names, name
    assert value(families["threatseer_output_queue_depth"], "", output="archive",
                 type="file") == 0

    publish = families["threatseer_hub_ingest_to_publish_seconds"]
    assert publish.type == "histogram"
    batches = value(publish, "_count")
    assert batches >= 20  # one observation per batch
    assert value(publish, "_bucket", le="+Inf") == batches
    assert 0 < value(publish, "_sum") < batches  # each well under a second
    assert value(publish, "_bucket", le="0.1") >= batches * 0.9

    delivered = families["threatseer_output_delivery_seconds"]
    assert delivered.type == "histogram"
    n = value(delivered, "_count", output="archive", type="file")
    assert n == value(families["threatseer_output_sent"], "_total", output="archive")
    assert n >= 100
    buckets = [s for s in delivered.samples if s.name.endswith("_bucket")]
    counts = [s.value for s in buckets]
    assert counts == sorted(counts) and counts[-1] == n  # cumulative, +Inf = count
    # delivered within the flush interval (0.1 s) and a write
    assert value(delivered, "_bucket", output="archive", le="1.0") == n

    info = families["threatseer_hub_bundle_info"]
    assert {s.labels["layer"] for s in info.samples} == {"base"}
