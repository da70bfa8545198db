"""Elasticsearch output against noida-db (an Elasticsearch-compatible server).

noida-db accepts index templates (including ``data_stream: {}``) and bulk ``create``, and
answers 409 for an existing _id, but has no _data_stream API: a "data stream" there is a
plain index of that name, which is all the output relies on.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from elasticsearch import Elasticsearch, helpers

from tests.outputs.conftest import make_event, stream_across_restart
from threatseer.common import ecs
from threatseer.hub.outputs import OutputConfig, Outputs
from threatseer.hub.outputs.es_template import properties


def output(url: str, spill_dir: str, **options: Any) -> OutputConfig:
    return OutputConfig(type="elasticsearch", options={"hosts": [url], "request_timeout_s": 3.0,
                                                       **options},
                        spill_dir=spill_dir, retry_max_s=0.5, flush_interval_s=0.1,
                        batch_size=200, queue_size=100_000)


def all_ids(es: Elasticsearch, index: str) -> list[str]:
    es.indices.refresh(index=index)
    return [hit["_id"] for hit in helpers.scan(es, index=index, query={"query": {"match_all": {}}})]


def test_es_setup_installs_ecs_template(es_server: Any, threatseer_cmd: list[str]) -> None:
    run = subprocess.run([*threatseer_cmd, "es-setup", "--hosts", es_server.url,
                          "--index", "ts-alerts", "--index-mode", "daily"],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert "ts-alerts-*" in run.stdout
    es = Elasticsearch(es_server.url)
    tpl = es.indices.get_index_template(name="ts-alerts")["index_templates"][0]["index_template"]
    assert tpl["index_patterns"] == ["ts-alerts-*"]
    props = tpl["template"]["mappings"]["properties"]
    assert props["destination"]["properties"]["ip"]["type"] == "ip"
    assert props["process"]["properties"]["pid"]["type"] == "long"
    assert props["@timestamp"]["type"] == "date"
    bad = subprocess.run([*threatseer_cmd, "es-setup", "--hosts", "http://127.0.0.1:1"],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 1 and "cannot install the template" in bad.stderr


def test_template_covers_every_schema_field() -> None:
    props = properties()
    for name in ecs.FIELDS:
        if name.endswith("*"):
            continue
        node: Any = {"properties": props}
        for part in name.split("."):
            node = node["properties"][part]
        assert "type" in node, name


def test_data_stream_bulk_dedup_and_dead_letter(es_server: Any, spill_dir: str) -> None:
    outs = Outputs([output(es_server.url, spill_dir, index="ts-events")])
    outs.start()
    events = [make_event(i) for i in range(500)]
    events[7]["destination.ip"] = "not-an-ip"  # refused by the ip mapping: 400
    for e in events:
        outs.emit(e)
    for e in events[:50]:  # sent again (a replay): the _id makes them no-ops
        outs.emit(e)
    outs.close(20)
    st = outs.status()[0]
    # 550 emitted; ev-7 refused twice (first time and replay), the 49 other copies are 409s.
    assert (st["sent"], st["failed"], st["dropped"]) == (548, 2, 0)
    es = Elasticsearch(es_server.url)
    ids = all_ids(es, "ts-events")
    assert sorted(ids) == sorted(e["event.id"] for e in events if e is not events[7])
    tpl = es.indices.get_index_template(name="ts-events")["index_templates"][0]
    assert "data_stream" in tpl["index_template"]
    dead = [json.loads(x) for x in (Path(spill_dir) / "elasticsearch.dead-letter.jsonl").open()]
    assert len(dead) == 2 and dead[0]["status"] == 400
    assert dead[0]["event"]["event.id"] == "ev-7" and "ip" in dead[0]["error"]
    doc = es.get(index="ts-events", id="ev-1")["_source"]
    assert doc["destination"]["port"] == 443 and doc["threatseer"]["indicators"][0]["rule"] == "r1"


def test_daily_index_names_from_timestamp(es_server: Any, spill_dir: str) -> None:
    outs = Outputs([output(es_server.url, spill_dir, index="daily", index_mode="daily")])
    outs.start()
    outs.emit(make_event(1, **{"@timestamp": "2026-11-27T23:59:59.000000Z"}))
    outs.emit(make_event(2, **{"@timestamp": "2026-11-28T00:00:01.000000Z"}))
    outs.close(10)
    es = Elasticsearch(es_server.url)
    assert all_ids(es, "daily-2026.11.27") == ["ev-1"]
    assert all_ids(es, "daily-2026.11.28") == ["ev-2"]


def test_server_restart_mid_stream_exactly_once(es_server: Any, spill_dir: str) -> None:
    outs = Outputs([output(es_server.url, spill_dir, index="ts-restart")])
    outs.start()
    total = 4000
    stream_across_restart(outs, es_server, total, drain_timeout=60)
    outs.close(20)
    st = outs.status()[0]
    assert st["retries"] > 0 and st["dropped"] == 0 and st["failed"] == 0
    ids = all_ids(Elasticsearch(es_server.url), "ts-restart")
    assert len(ids) == total  # exactly once: create with _id refuses copies
    assert set(ids) == {f"ev-{i}" for i in range(total)}


def test_odd_values_do_not_wedge_the_batch(es_server: Any, spill_dir: str) -> None:
    """Values JSON has no type for (bytes, sets) become strings instead of failing forever."""
    outs = Outputs([output(es_server.url, spill_dir, index="odd")])
    outs.start()
    outs.emit(make_event(1, **{"threatseer.raw": b"\x00\x01", "threatseer.tags": {"a"}}))
    outs.emit(make_event(2))
    outs.close(10)
    assert outs.status()[0]["sent"] == 2
    doc = Elasticsearch(es_server.url).get(index="odd", id="ev-1")["_source"]
    assert doc["threatseer"]["raw"] == "b'\\x00\\x01'"
