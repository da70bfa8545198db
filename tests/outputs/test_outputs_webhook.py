"""The webhook output against a real HTTP(S) server on 127.0.0.1: the Slack, Mattermost,
Teams and generic bodies, a custom template, retries on 5xx/429 (with Retry-After) and across
an outage, refusals counted, TLS."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import free_port
from tests.outputs.conftest import make_event, wait_for
from tests.outputs.receivers import HttpReceiver, self_signed
from threatseer.common.configfile import ConfigError, from_dict
from threatseer.hub.outputs import OutputConfig, Outputs


def webhook(port: int, scheme: str = "http", **options: Any) -> OutputConfig:
    return OutputConfig(type="webhook", name="hook", retry_max_s=0.5, flush_interval_s=0.1,
                        options={"url": f"{scheme}://127.0.0.1:{port}/hooks/T0K3N?x=1",
                                 "timeout_s": 2.0, **options})


def alert(i: int) -> dict[str, Any]:
    ev = make_event(i, **{"event.kind": "alert", "event.risk_score": 120,
                          "process.command_line": f"cat /etc/shadow {i}"})
    ev["threatseer.indicators"] = [
        {"engine": "dynamic", "rule": "shadow_file_read", "type": "query", "description": "d",
         "score": 70, "tags": [], "extra_info": {"output": f"cat read /etc/shadow ({i})"}},
        {"engine": "static", "rule": "/etc/shadow", "type": "sensitive_file",
         "description": "d", "score": 50, "tags": [], "extra_info": {}}]
    return ev


@pytest.fixture
def receiver() -> Any:
    r = HttpReceiver(free_port()).start()
    yield r
    r.stop()


def run(cfg: OutputConfig, events: list[dict[str, Any]], timeout: float = 10) -> Outputs:
    outs = Outputs([cfg])
    outs.start()
    for ev in events:
        outs.emit(ev)
    outs.close(timeout)
    return outs


def test_presets_post_each_event_in_its_receivers_format(receiver: HttpReceiver) -> None:
    for fmt in ("generic", "slack", "mattermost", "teams"):
        run(webhook(receiver.port, format=fmt, headers={"Authorization": "Bearer s3cret"}),
            [alert(7)])
    generic, slack, mattermost, teams = receiver.delivered()
    assert all(r["path"] == "/hooks/T0K3N?x=1" and r["method"] == "POST"
               and r["headers"]["Authorization"] == "Bearer s3cret"
               and r["headers"]["Content-Type"] == "application/json"
               for r in receiver.requests)
    # generic: the nested ECS document
    assert generic["event"]["id"] == "ev-7" and generic["process"]["command_line"] == \
        "cat /etc/shadow 7"
    assert generic["threatseer"]["indicators"][0]["rule"] == "shadow_file_read"
    # slack: a title line and an attachment with the facts and the rules' outputs
    assert slack["text"] == ("threatseer alert (score 120): shadow_file_read (+1 more) on "
                             "host1")
    att = slack["attachments"][0]
    assert att["color"] == "#d40000" and att["text"] == "cat read /etc/shadow (7)"
    assert {f["title"]: f["value"] for f in att["fields"]} == {
        "Score": "120", "Host": "host1", "Process": "/usr/bin/tool2",
        "Rules": "shadow_file_read, /etc/shadow"}
    assert mattermost["username"] == "threatseer" and mattermost["text"] == slack["text"]
    card = teams["attachments"][0]
    assert teams["type"] == "message"
    assert card["contentType"] == "application/vnd.microsoft.card.adaptive"
    body = card["content"]["body"]
    assert body[0]["text"] == slack["text"]
    assert {f["title"]: f["value"] for f in body[2]["facts"]}["Score"] == "120"


def test_custom_template_and_batches(receiver: HttpReceiver) -> None:
    template = {"alert": "{@title}", "who": "{process.executable}", "args": "{process.args}",
                "score": "{event.risk_score}", "missing": "user {user.name}",
                "nested": {"list": ["{host.name}", 3, True, None]}}
    run(webhook(receiver.port, format="custom", template=template, batch=True),
        [alert(i) for i in range(5)])
    (body,) = receiver.delivered()  # one request with a JSON array of bodies
    assert len(body) == 5
    assert body[1] == {"alert": "threatseer alert (score 120): shadow_file_read (+1 more) on "
                                "host1", "who": "/usr/bin/tool1",
                       "args": ["tool1", "--n", "1"], "score": 120, "missing": "user <NA>",
                       "nested": {"list": ["host1", 3, True, None]}}


def test_5xx_and_429_are_sent_again_and_4xx_counted(receiver: HttpReceiver) -> None:
    receiver.answers = [(500, {}), (429, {"Retry-After": "1"}), (200, {}), (400, {}),
                        (503, {})]
    started = time.monotonic()
    outs = run(webhook(receiver.port, format="slack"), [alert(i) for i in range(4)])
    took = time.monotonic() - started
    status = outs.status()[0]
    # ev0: 500, 429 (wait 1 s), 200; ev1: 400 (refused for good); ev2: 503 then 200; ev3: 200
    assert [r["status"] for r in receiver.requests] == [500, 429, 200, 400, 503, 200, 200]
    assert (status["sent"], status["failed"], status["retries"]) == (3, 1, 3)
    assert took >= 1.0, "Retry-After was honoured"
    assert status["last_error"] == f"http://127.0.0.1:{receiver.port}: HTTP 503, sending again later"
    delivered = [b["attachments"][0]["text"] for b in receiver.delivered()]
    assert delivered == ["cat read /etc/shadow (0)", "cat read /etc/shadow (2)",
                         "cat read /etc/shadow (3)"]


def test_an_outage_is_retried_until_the_receiver_is_back(tmp_path: Path) -> None:
    port = free_port()
    first = HttpReceiver(port).start()
    outs = Outputs([webhook(port, format="generic")])
    outs.start()
    try:
        for i in range(20):
            outs.emit(alert(i))
        wait_for(lambda: len(first.delivered()) == 20, what="first part")
        first.stop()
        for i in range(20, 40):
            outs.emit(alert(i))
        wait_for(lambda: not outs.status()[0]["connected"], what="the outage noticed")
        assert "127.0.0.1" in outs.status()[0]["last_error"]
        assert "T0K3N" not in outs.status()[0]["last_error"]  # the URL's token stays out
        time.sleep(1.0)
        again = HttpReceiver(port).start()
        try:
            wait_for(lambda: outs.status()[0]["sent"] == 40, what="the backlog after the outage")
            ids = [b["event"]["id"] for b in first.delivered() + again.delivered()]
            assert ids == [f"ev-{i}" for i in range(40)]  # each once, in order
            status = outs.status()[0]
            assert status["sent"] == 40 and status["retries"] >= 1 and status["connected"]
        finally:
            outs.close(5)
            again.stop()
    finally:
        first.stop()


def test_https_with_the_servers_ca(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    receiver = HttpReceiver(free_port(), tls=(cert, key)).start()
    try:
        run(webhook(receiver.port, scheme="https", ca_certs=cert), [alert(1), alert(2)])
        assert len(receiver.delivered()) == 2
        strict = Outputs([webhook(receiver.port, scheme="https")])
        strict.start()
        strict.emit(alert(3))
        wait_for(lambda: "CERTIFICATE_VERIFY_FAILED" in strict.status()[0]["last_error"],
                 what="certificate refused")
        strict.close(0.5)
        assert len(receiver.delivered()) == 2
    finally:
        receiver.stop()


@pytest.mark.parametrize(("options", "expected"), [
    ({"url": "ftp://x"}, "options.url: must be an http:// or https:// URL"),
    ({"url": "http://x", "format": "discord"}, "options.format: must be one of"),
    ({"url": "http://x", "format": "custom"}, "options.template: give one with format custom"),
    ({"url": "http://x", "format": "custom", "template": {"a": "{proces.name}"}},
     "options.template: unknown field 'proces.name'"),
    ({"url": "http://x", "format": "custom", "template": "{@nope}"},
     "options.template: unknown special {@nope}"),
    ({"url": "http://x", "headres": {}}, "options.headres: unknown key"),
])
def test_config_mistakes_name_the_key(options: dict[str, Any], expected: str) -> None:
    with pytest.raises(ConfigError) as err:
        from_dict({"type": "webhook", "options": options}, OutputConfig, "hub.yaml",
                  prefix="outputs[0]")
    assert f"outputs[0].{expected}" in str(err.value), str(err.value)
