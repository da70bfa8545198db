"""Elasticsearch output against noida-db (an Elasticsearch-compatible server).

noida-db accepts index templates (including ``data_stream: {}``), ingest pipelines, gzip
request bodies and bulk ``create``, and answers 409 for an existing _id. Where a real
Elasticsearch differs: noida-db has no _data_stream API (a "data stream" there is a plain index
of that name, which is all the output relies on: it writes with ``create`` only), no ILM API
(the policy is checked through tests/outputs/es_front.py's fake of it, and nothing rolls over),
and no TLS (the front provides it, with client certificate authentication).
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import ssl
import subprocess
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from ecs_reference import reference
from elasticsearch import Elasticsearch, helpers

from tests.outputs.conftest import make_event, stream_across_restart, wait_for
from tests.outputs.es_front import EsFront
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
                          "--index", "ts-alerts", "--index-mode", "daily", "--ilm-policy", ""],
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
    bad = subprocess.run([*threatseer_cmd, "es-setup", "--hosts", "http://127.0.0.1:1",
                          "--ilm-policy", ""], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 1 and "cannot install the template" in bad.stderr


def test_es_setup_installs_the_ilm_policy_and_a_data_stream_template(
        es_server: Any, threatseer_cmd: list[str]) -> None:
    """The default: the ILM policy, then a template for logs-threatseer.events-* naming it.
    noida-db has no ILM API: on it es-setup says so; the policy is checked through the front's
    fake of that API (tests/outputs/es_front.py)."""
    on_noida = subprocess.run([*threatseer_cmd, "es-setup", "--hosts", es_server.url],
                              capture_output=True, text=True, timeout=60)
    assert on_noida.returncode == 1
    assert "cannot install the ILM policy 'threatseer-events'" in on_noida.stderr
    assert "Traceback" not in on_noida.stderr
    front = EsFront(es_server.url).start()
    try:
        run = subprocess.run([*threatseer_cmd, "es-setup", "--hosts", front.url,
                              "--retention-days", "14"], capture_output=True, text=True,
                             timeout=60)
        assert run.returncode == 0, run.stderr
        assert "logs-threatseer.events-*" in run.stdout
        assert "'logs-threatseer.events-default'" in run.stdout
        policy = front.policies["threatseer-events"]["policy"]
        assert policy["phases"]["delete"] == {"min_age": "14d", "actions": {"delete": {}}}
        assert policy["phases"]["hot"]["actions"]["rollover"]["max_age"] == "1d"
    finally:
        front.stop()
    es = Elasticsearch(es_server.url)
    tpl = es.indices.get_index_template(name="logs-threatseer.events")["index_templates"][0][
        "index_template"]
    assert tpl["index_patterns"] == ["logs-threatseer.events-*"]
    assert "data_stream" in tpl and tpl["priority"] > 100  # above the built-in logs-*-*
    settings = tpl["template"]["settings"]
    flat = ecs.flatten(settings)
    assert "threatseer-events" in (flat.get("index.lifecycle.name"),
                                   flat.get("index.index.lifecycle.name"))
    stream = tpl["template"]["mappings"]["properties"]["data_stream"]["properties"]
    assert stream["dataset"] == {"type": "constant_keyword", "value": "threatseer.events"}


def test_template_covers_every_schema_field() -> None:
    props = properties()
    for name in ecs.FIELDS:
        if name.endswith("*"):
            continue
        node: Any = {"properties": props}
        for part in name.split("."):
            node = node["properties"][part]
        assert "type" in node, name


def _leaves(props: dict[str, Any], prefix: str = "") -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for key, node in props.items():
        name = f"{prefix}{key}"
        if "properties" in node and "type" not in node:
            out.update(_leaves(node["properties"], name + "."))
        else:
            out[name] = node
    return out


def test_the_template_maps_every_field_as_ecs_does() -> None:
    """Each mapped field ECS names has ECS's type (file.size long, file.mtime date, ...);
    the rest is under threatseer.*."""
    ref = reference()
    bad = []
    for name, node in _leaves(properties()).items():
        if name in ref:
            if node["type"] != ref[name]["type"]:
                bad.append(f"{name}: {node['type']}, ECS {ref[name]['type']}")
        elif not name.startswith("threatseer."):
            bad.append(f"{name}: not ECS and not under threatseer.*")
    assert bad == []
    leaves = _leaves(properties())
    assert leaves["file.size"]["type"] == "long" and leaves["file.mtime"]["type"] == "date"


def test_default_data_stream_documents_pipeline_and_compression(
        es_server: Any, spill_dir: str) -> None:
    """logs-threatseer.events-<namespace>, each document with its data_stream.* fields, sent
    gzip-compressed through the configured ingest pipeline (noida-db runs pipelines)."""
    es = Elasticsearch(es_server.url)
    es.ingest.put_pipeline(id="ts-tag", processors=[
        {"set": {"field": "labels.pipeline", "value": "ts-tag"}}])
    front = EsFront(es_server.url).start()
    try:
        outs = Outputs([output(front.url, spill_dir, namespace="prod", pipeline="ts-tag")])
        outs.start()
        for i in range(20):
            outs.emit(make_event(i))
        outs.close(10)
        assert outs.status()[0]["sent"] == 20
    finally:
        front.stop()
    bulks = [(path, headers) for method, path, headers in front.requests if "_bulk" in path]
    assert bulks and all("pipeline=ts-tag" in path for path, _ in bulks)
    assert all(headers.get("content-encoding") == "gzip" for _, headers in bulks)
    assert sorted(all_ids(es, "logs-threatseer.events-prod")) == sorted(
        f"ev-{i}" for i in range(20))
    doc = es.get(index="logs-threatseer.events-prod", id="ev-3")["_source"]
    assert doc["data_stream"] == {"type": "logs", "dataset": "threatseer.events",
                                  "namespace": "prod"}
    assert doc["event"]["dataset"] == "threatseer.events"
    assert doc["labels"]["pipeline"] == "ts-tag"


def _cert(name: str, key: Any, issuer: Any, issuer_key: Any, ca: bool) -> Any:
    now = datetime.datetime.now(datetime.UTC)
    builder = (x509.CertificateBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
               .issuer_name(issuer).public_key(key.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5))
               .not_valid_after(now + datetime.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if name == "127.0.0.1":
        builder = builder.add_extension(x509.SubjectAlternativeName(
            [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def _pems(tmp_path: Path) -> dict[str, str]:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, both from it."""
    out: dict[str, str] = {}
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ts-test-ca")])
    ca = _cert("ts-test-ca", ca_key, ca_name, ca_key, True)
    for role, cn in (("server", "127.0.0.1"), ("client", "threatseer-hub")):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _cert(cn, key, ca_name, ca_key, False)
        (tmp_path / f"{role}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        (tmp_path / f"{role}.key").write_bytes(key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption()))
        out[role], out[f"{role}_key"] = str(tmp_path / f"{role}.pem"), str(tmp_path / f"{role}.key")
    (tmp_path / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    out["ca"] = str(tmp_path / "ca.pem")
    return out


def test_client_certificate_authentication(es_server: Any, spill_dir: str,
                                           tmp_path: Path) -> None:
    """A TLS front requiring a client certificate from the CA (as Elasticsearch does with
    client_authentication: required): the output with its certificate delivers, without it
    the handshake is refused and nothing is sent."""
    pems = _pems(tmp_path)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=pems["ca"])
    ctx.load_cert_chain(pems["server"], pems["server_key"])
    ctx.verify_mode = ssl.CERT_REQUIRED
    front = EsFront(es_server.url, tls=ctx).start()
    try:
        outs = Outputs([output(front.url, spill_dir, index="ts-mtls", ca_certs=pems["ca"],
                               client_cert=pems["client"], client_key=pems["client_key"])])
        outs.start()
        for i in range(10):
            outs.emit(make_event(i))
        outs.close(10)
        assert outs.status()[0]["sent"] == 10
        anonymous = Outputs([output(front.url, spill_dir, index="ts-mtls-anon",
                                    ca_certs=pems["ca"])])
        anonymous.start()
        anonymous.emit(make_event(1))
        wait_for(lambda: anonymous.status()[0]["last_error"], what="a refused handshake")
        anonymous.close(0.5)
        assert anonymous.status()[0]["sent"] == 0
    finally:
        front.stop()
    assert len(all_ids(Elasticsearch(es_server.url), "ts-mtls")) == 10


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
