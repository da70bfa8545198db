"""The console of a real hub (an in-process hub, its console process, real ZeroMQ, real
HTTP): access and roles, held alerts and their filters, the live stream, an alert's detail and
tree, fleet health, the profile operations, HTTPS, and the console process kept running."""

from __future__ import annotations

import time

import pytest
import zmq
from console_helpers import Stream, request, shadow_read, wait_until
from hub_helpers import Sender, exec_event

from threatseer.hub.profiles import ProfileStore


def _send(hub, batches, sensor="s-web1"):  # type: ignore[no-untyped-def]
    """Send batches as ``sensor`` (one sender per sensor and hub, so sequence numbers go on)."""
    senders = hub.__dict__.setdefault("_test_senders", {})
    if sensor not in senders:
        senders[sensor] = Sender(hub._test_ctx, hub.cfg.ingest.endpoint, sensor)
    for b in batches:
        senders[sensor].send(b)


def _held(hub, n, kind="any"):  # type: ignore[no-untyped-def]
    base = hub.console.url
    tok = hub._test_token

    def enough():
        status, body = request(base, f"/api/alerts?kind={kind}", tok)
        return body["alerts"] if status == 200 and len(body["alerts"]) >= n else None
    return wait_until(enough, 10, what=f"{n} held alerts")


@pytest.fixture
def hub(console_hub, tokens):  # type: ignore[no-untyped-def]
    h = console_hub()
    h._test_token = tokens.viewer
    h._test_ctx = zmq.Context()
    try:
        yield h
    finally:
        h._test_ctx.destroy(linger=0)


def test_access_needs_a_token_and_admin_actions_need_the_admin_role(hub, tokens):
    base = hub.console.url
    # The page itself holds no data and needs no token; every API route does.
    status, page = request(base, "/")
    assert status == 200 and b"app.js" in page
    for path in ("/api/session", "/api/alerts", "/api/health", "/api/profiles"):
        assert request(base, path)[0] == 401, path
        assert request(base, path, "tsc_" + "x" * 43)[0] == 401, path
    assert request(base, "/api/session", tokens.viewer) == (200, {
        **request(base, "/api/session", tokens.viewer)[1], "name": "vera", "role": "viewer"})
    assert request(base, "/api/session", tokens.admin)[1]["role"] == "admin"
    # A viewer reads profiles but may not change them.
    _send(hub, [shadow_read("web1", 1)])
    wait_until(lambda: request(base, "/api/profiles", tokens.viewer)[1].get("profiles"), 10,
               what="profiles written")
    status, body = request(base, "/api/profiles/reset", tokens.viewer, "POST", {"subject": "*"})
    assert status == 403 and "admin" in body["error"]
    status, body = request(base, "/api/profiles/reset", tokens.admin, "POST", {"subject": "*"})
    assert status == 200 and body["profiles"] >= 1
    # A token removed from its list is refused from then on (no restart).
    tokens.viewer_file.write_text("# nobody\n")
    wait_until(lambda: request(base, "/api/session", tokens.viewer)[0] == 401, 5,
               what="revoked token refused")
    # Security headers on every answer: the page runs only its own script.
    req = __import__("urllib.request").request.urlopen(base, timeout=5)
    csp = req.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp


def test_guessing_tokens_is_throttled_per_address(hub, tokens):
    base = hub.console.url
    for _ in range(20):
        assert request(base, "/api/session", "tsc_wrong")[0] == 401
    status, body = request(base, "/api/session", tokens.admin)
    assert status == 429 and "wait" in body["error"]


def test_held_alerts_filter_by_host_rule_score_and_kind(hub, tokens):
    _send(hub, [shadow_read("web1", 1), shadow_read("db7", 2)])
    alerts = _held(hub, 6)
    base, tok = hub.console.url, tokens.viewer
    by_kind = {a["kind"] for a in alerts}
    assert by_kind == {"alert", "event"}, alerts

    def shown(query):  # type: ignore[no-untyped-def]
        status, body = request(base, "/api/alerts?" + query, tok)
        assert status == 200, body
        return body["alerts"]

    only_alerts = shown("")
    assert only_alerts and all(a["kind"] == "alert" for a in only_alerts)
    # host, rule and process are the tap's filters (hub/event_filter.py): globs, commas
    assert {a["host"] for a in shown("host=db*")} == {"db7"}
    assert {a["host"] for a in shown("host=db7,web1")} == {"db7", "web1"}
    assert shown("host=db") == [] and shown("host=nowhere") == []
    assert all("shadow_file_read" in a["rules"] for a in shown("rule=shadow_file*"))
    assert shown("rule=no_such_rule") == []
    assert {a["process"] for a in shown("process=ca?&kind=any")} == {"cat"}
    assert {a["process"] for a in shown("process=bash&kind=any")} == {"bash"}
    high = shown("min_score=100&kind=any")
    assert high and all(a["score"] >= 100 for a in high)
    low = shown("kind=event")
    assert low and all(a["kind"] == "event" for a in low)
    # Newest first, and paging with before= continues where the page stopped.
    seqs = [a["seq"] for a in shown("kind=any")]
    assert seqs == sorted(seqs, reverse=True)
    older = shown(f"kind=any&before={seqs[1]}")
    assert [a["seq"] for a in older] == seqs[2:]
    # Bad parameters are one clear error, not a traceback.
    status, body = request(base, "/api/alerts?min_score=lots", tok)
    assert status == 400 and "min_score" in body["error"]
    status, body = request(base, "/api/alerts?kind=bogus", tok)
    assert status == 400 and "kind" in body["error"]


def test_stream_sends_new_alerts_filtered_and_resumes_after_a_reconnect(hub, tokens):
    base = hub.console.url
    stream = Stream(base, tokens.viewer, "host=web1")
    try:
        assert stream.status == 200
        kind, hello, _ = stream.next_event()
        assert kind == "hello"
        started = time.monotonic()
        _send(hub, [shadow_read("db7", 1), shadow_read("web1", 2)])
        got = stream.alerts_until(lambda a: a["what"] == "/etc/shadow")
        assert time.monotonic() - started < 1.0
        assert {a["host"] for a in got} == {"web1"}, "the host filter applies to the stream"
        last = max(a["seq"] for a in got)
    finally:
        stream.close()
    # Alerts that arrive while the page is disconnected are sent when it comes back.
    _send(hub, [shadow_read("web1", 3)])
    _held(hub, 3, "alert")
    again = Stream(base, tokens.viewer, f"host=web1&after={last}&instance={hello['instance']}")
    try:
        assert again.next_event()[0] == "hello"
        missed = again.alerts_until(lambda a: True, 3)
        assert missed and all(a["seq"] > last for a in missed)
    finally:
        again.close()


def test_alert_detail_has_indicators_document_and_the_tree(hub, tokens):
    _send(hub, [shadow_read("web1", 1)])
    base, tok = hub.console.url, tokens.viewer
    alert = wait_until(lambda: request(base, "/api/alerts?rule=shadow*", tok)[1]["alerts"], 10)[0]
    status, d = request(base, f"/api/alerts/{alert['seq']}", tok)
    assert status == 200
    engines = {(i["engine"], i["rule"]) for i in d["indicators"]}
    assert ("dynamic", "shadow_file_read") in engines and ("static", "/etc/shadow") in engines
    assert all({"engine", "rule", "score", "description"} <= set(i) for i in d["indicators"])
    doc = d["document"]
    assert doc["file"]["path"] == "/etc/shadow" and doc["event"]["kind"] == "alert"
    # Root first: the names-only ancestor, sshd (a stub from bash's parent fields), bash, cat.
    root = d["tree"]
    assert root["name"] == "systemd" and root.get("named_only")
    sshd = root["children"][-1]
    assert sshd["name"] == "sshd" and not sshd["seen"]
    bash = sshd["children"][-1]
    assert bash["name"] == "bash" and bash["seen"]
    assert [e["action"] for e in bash["events"]] == ["exec"]
    cat = bash["children"][-1]
    assert cat["name"] == "cat" and cat["alert"]
    assert [e["action"] for e in cat["events"]] == ["exec", "open"]
    assert cat["events"][1]["seq"] == alert["seq"]
    # Another console run's numbers are refused clearly; unknown numbers too.
    assert request(base, f"/api/alerts/{alert['seq']}?instance=0000", tok)[0] == 410
    assert request(base, "/api/alerts/999999", tok)[0] == 404


def test_health_lists_sensors_outputs_bundle_series_and_top_rules(hub, tokens):
    _send(hub, [shadow_read("web1", 1), [exec_event("/usr/bin/true", **{
        "host.name": "web1", "agent.version": "9.9.9"})]], sensor="s-web1")
    base, tok = hub.console.url, tokens.viewer

    def ready():  # type: ignore[no-untyped-def]
        h = request(base, "/api/health", tok)[1]
        hub_side = h["sensors"][0].get("hub", {}) if h["sensors"] else {}
        return h if hub_side.get("events_in", 0) >= 4 and h["totals"]["alerts"] else None
    h = wait_until(ready, 10, what="health with the sensor and the hub's status")
    s = h["sensors"][0]
    assert s["agent"] == "s-web1" and s["host"] == "web1" and s["version"] == "9.9.9"
    assert s["rate"] > 0 and s["lag_s"] is not None and s["last_seen"] > 0
    assert s["hub"]["events_in"] >= 4 and s["hub"]["lost_batches"] == 0
    assert h["outputs"] == []
    assert h["bundle"]["name"] == "threatseer-default"
    assert sum(h["series"]["alerts"]) >= 1 and sum(h["series"]["events"]) >= 4
    assert len(h["series"]["minutes"]) == 60
    assert {"rule": "shadow_file_read", "hits": 1} in h["top_rules"]
    assert h["console"]["feed"]["status"] == "hub tap"
    assert h["hub"]["console"]["url"] == base and h["hub"]["console"]["dropped"] == 0


def test_profile_operations_are_those_of_the_cli(hub, tokens):
    _send(hub, [shadow_read("web1", 1)])
    base = hub.console.url
    rows = wait_until(lambda: request(base, "/api/profiles", tokens.viewer)[1].get("profiles"),
                      10, what="profiles")
    subject = next(r["subject"] for r in rows if r["subject"].endswith("/usr/bin/cat"))
    status, prof = request(base, "/api/profiles/show?subject=" + subject, tokens.viewer)
    assert status == 200 and prof["subject"] == subject and prof["behaviors"]
    store = ProfileStore(hub.cfg.profile_db())
    try:
        assert store.show(subject) == prof
        status, body = request(base, "/api/profiles/relearn", tokens.admin, "POST",
                               {"subject": subject})
        assert (status, body["profiles"]) == (200, 1)
        assert store.show(subject)["events"] == 0  # the same change `profiles relearn` makes
        status, _ = request(base, "/api/profiles/reset", tokens.admin, "POST",
                            {"subject": subject})
        assert status == 200 and store.show(subject) is None
        ops = [op for _id, s, op, _at in store.commands_after(0) if s == subject]
        assert ops == ["relearn", "reset"]  # queued for the running hub like the CLI's
    finally:
        store.close()
    assert request(base, "/api/profiles/show?subject=nope", tokens.viewer)[0] == 404
    status, body = request(base, "/api/profiles/reset", tokens.admin, "POST", {"who": 1})
    assert status == 400 and "subject" in body["error"]
    status, _ = request(base, "/api/profiles/reset", tokens.admin, "POST", body=None,
                        headers={"Content-Type": "text/plain"})
    assert status == 415


def test_the_console_keeps_its_feed_when_the_pub_socket_is_rebound(hub, tokens):
    # A revoked subscriber key re-binds the PUB socket; the console reads its own tap.
    _send(hub, [shadow_read("web1", 1)])
    _held(hub, 1, "alert")
    hub._rebind_publisher = True  # what the ZAP thread does on a revocation
    wait_until(lambda: hub.publisher.rebinds == 1, 5, what="the rebind")
    _send(hub, [shadow_read("web1", 2)])
    _held(hub, 2, "alert")
    assert hub.publisher.tap_dropped == 0


def test_the_console_serves_https_with_a_certificate(console_hub, tokens, tmp_path):
    import ssl
    import subprocess
    import urllib.request

    cert, key = tmp_path / "console.crt", tmp_path / "console.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1", "-subj",
                    "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    hub = console_hub(console__tls_cert_file=str(cert), console__tls_key_file=str(key))
    assert hub.console.url.startswith("https://127.0.0.1:")
    ctx = ssl.create_default_context(cafile=str(cert))
    req = urllib.request.Request(hub.console.url + "api/session",
                                 headers={"Authorization": f"Bearer {tokens.viewer}"})
    with urllib.request.urlopen(req, context=ctx, timeout=10) as resp:
        assert resp.status == 200 and b'"role":"viewer"' in resp.read()


def test_health_shows_outputs_with_their_errors_and_sensor_losses(console_hub, tokens,
                                                                   tmp_path):
    from hub_helpers import base, free_port

    from threatseer.hub.outputs import OutputConfig

    outputs = [OutputConfig(type="file", name="alerts-file", spill_dir=str(tmp_path),
                            options={"path": str(tmp_path / "alerts.jsonl")}),
               OutputConfig(type="redis", name="gone-redis", spill_dir=str(tmp_path),
                            retry_max_s=0.5,
                            options={"url": f"redis://127.0.0.1:{free_port()}/0",
                                     "timeout_s": 0.5})]
    for o in outputs:
        o.validate()
    h = console_hub(outputs=outputs)
    h._test_ctx = zmq.Context()
    try:
        loss = base("sensor-loss", **{"threatseer.loss.events": 7, "agent.version": "1",
                                      "threatseer.loss.reason": "ring buffer full"})
        health = base("sensor-health", **{"event.kind": "metric",
                                          "threatseer.health.kernel_lost": 3,
                                          "threatseer.health.send_dropped": 2})
        _send(h, [shadow_read("web1", 1), [loss, health]])

        def ready():  # type: ignore[no-untyped-def]
            v = request(h.console.url, "/api/health", tokens.viewer)[1]
            outs = {o["name"]: o for o in v.get("outputs") or []}
            bad = outs.get("gone-redis", {})
            return v if v["sensors"] and bad.get("last_error") and bad.get("queue_depth") \
                and outs["alerts-file"].get("sent") else None
        v = wait_until(ready, 15, what="outputs and losses in the health view")
    finally:
        h._test_ctx.destroy(linger=0)
    outs = {o["name"]: o for o in v["outputs"]}
    assert outs["alerts-file"]["connected"] and outs["alerts-file"]["failed"] == 0
    assert not outs["gone-redis"]["connected"] and outs["gone-redis"]["queue_depth"] >= 1
    s = v["sensors"][0]
    assert s["loss_events"] == 7 and s["dropped_counters"] == 5
    assert s["health"]["kernel_lost"] == 3


def test_a_console_process_that_dies_is_started_again(hub, tokens, monkeypatch):
    import os
    import signal

    from threatseer.hub.console import child

    monkeypatch.setattr(child, "RESTART_AFTER_S", 0.0)
    first = hub.console.pid
    os.kill(first, signal.SIGKILL)
    wait_until(lambda: hub.console.pid not in (None, first) and
               request(hub.console.url, "/api/session", tokens.viewer)[0] == 200, 15,
               what="the console started again")
    assert hub.console.restarts == 1
    _send(hub, [shadow_read("web1", 1)])  # and it is fed again
    _held(hub, 1, "alert")
