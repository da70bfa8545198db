"""The syslog output: RFC 5424 messages checked byte for byte on a socket, then parsed by a
real rsyslogd over UDP, TCP (both framings) and TLS, including an rsyslogd restart
mid-stream and a UDP receiver that is not there."""

from __future__ import annotations

import json
import re
import socket
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import free_port
from tests.outputs.conftest import make_event, wait_for
from tests.outputs.receivers import Rsyslog, self_signed
from threatseer.common import ecs
from threatseer.common.configfile import ConfigError, from_dict
from threatseer.hub.outputs import OutputConfig, Outputs

# RFC 5424 section 6: HEADER SP STRUCTURED-DATA [SP MSG]
RFC5424 = re.compile(
    rb"<(?P<pri>\d{1,3})>1 (?P<ts>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d{1,6})?"
    rb"(?:Z|[+-]\d\d:\d\d)) (?P<host>[\x21-\x7e]{1,255}) (?P<app>[\x21-\x7e]{1,48}) "
    rb"(?P<procid>[\x21-\x7e]{1,128}) (?P<msgid>[\x21-\x7e]{1,32}) "
    rb"(?P<sd>-|(?:\[[^ =\]\"]+(?: [^ =\]\"]+=\"(?:[^\"\\\]]|\\[\"\\\]])*\")*\])+)"
    rb"(?: (?P<msg>.*))?\Z", re.S)


def syslog(port: int, protocol: str = "udp", **options: Any) -> OutputConfig:
    return OutputConfig(type="syslog", name="siem", retry_max_s=0.5, flush_interval_s=0.1,
                        batch_size=100, options={"host": "127.0.0.1", "port": port,
                                                 "protocol": protocol, "timeout_s": 2.0,
                                                 **options})


def tricky(i: int) -> dict[str, Any]:
    """An alert whose rule names and host need escaping and cleaning."""
    return make_event(i, **{"event.kind": "alert", "host.name": "web 1",
                            "threatseer.indicators": [{"rule": 'a"b]c\\d', "score": 70},
                                                      {"rule": "two", "score": 50}]})


def test_messages_are_rfc5424_byte_for_byte() -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(5)
    try:
        port = sock.getsockname()[1]
        outs = Outputs([syslog(port, sd_id="threatseer@32473", facility="local3",
                               alert_severity="crit")])
        outs.start()
        events = [tricky(0), make_event(1), make_event(3, **{"@timestamp": "yesterday"})]
        for ev in events:
            outs.emit(ev)
        outs.close(5)
        got = [sock.recv(65536) for _ in events]
    finally:
        sock.close()
    m = [RFC5424.match(g) for g in got]
    assert all(m), got
    alert, plain, untimed = m
    assert int(alert["pri"]) == 19 * 8 + 2 and int(plain["pri"]) == 19 * 8 + 5  # crit, notice
    assert alert["ts"] == b"2026-11-28T02:00:00.000000Z"
    assert untimed["ts"] != b"yesterday"  # an unusable timestamp becomes the send time
    assert alert["host"] == b"web_1" and plain["host"] == b"host1"
    assert (alert["app"], alert["procid"], alert["msgid"]) == (b"threatseer", b"-", b"exec")
    assert plain["msgid"] == b"connect"
    assert alert["sd"] == (b'[threatseer@32473 score="0" kind="alert" action="exec" '
                           b'id="ev-0" rules="a\\"b\\]c\\\\d,two"]')
    assert json.loads(plain["msg"]) == ecs.nest(make_event(1))


def test_rsyslog_parses_what_udp_sends(tmp_path: Path) -> None:
    rs = Rsyslog(tmp_path / "rs", free_port(), "udp").start()
    try:
        outs = Outputs([syslog(rs.port, sd_id="ts@32473", format="text")])
        outs.start()
        for i in range(50):
            outs.emit(make_event(i))
        outs.close(5)
        wait_for(lambda: len(rs.lines()) == 50, what=f"50 lines parsed: {rs.log()}")
    finally:
        rs.stop()
    lines = rs.lines()
    pri, version, ts, host, app, procid, msgid, sd, msg = lines[7]
    assert (pri, version, host, app, procid, msgid) == ("133", "1", "host1", "threatseer", "-",
                                                         "connect")
    assert ts.startswith("2026-11-28T02:00:00.000007")
    assert sd == '[ts@32473 score="7" kind="event" action="connect" id="ev-7" rules="r1"]'
    assert msg.startswith("2026-11-28T02:00:00.000007Z score=7 event connect host1")
    assert lines[0][0] == "132"  # ev-0 is an alert: local0.warning


@pytest.mark.parametrize("framing", ["octet-counting", "non-transparent"])
def test_rsyslog_over_tcp_across_a_restart(tmp_path: Path, framing: str) -> None:
    port = free_port()
    rs = Rsyslog(tmp_path / "rs1", port, "tcp").start()
    outs = Outputs([syslog(port, "tcp", framing=framing)])
    outs.start()
    try:
        for i in range(200):
            outs.emit(make_event(i))
        wait_for(lambda: len(rs.lines()) == 200, what=f"first part: {rs.log()}")
        rs.stop()
        for i in range(200, 300):  # while it is down: kept and retried
            outs.emit(make_event(i))
        wait_for(lambda: not outs.status()[0]["connected"], what="the outage noticed")
        assert "Connection refused" in outs.status()[0]["last_error"]
        time.sleep(0.5)
        rs2 = Rsyslog(tmp_path / "rs2", port, "tcp").start()
        try:
            for i in range(300, 400):
                outs.emit(make_event(i))
            wait_for(lambda: len(rs2.lines()) >= 200, what=f"second part: {rs2.log()}")
            outs.close(5)
            ids = [json.loads(line[8])["event"]["id"] for line in rs.lines() + rs2.lines()]
        finally:
            rs2.stop()
    finally:
        outs.close(1)
        rs.stop()
    # Every event arrived: those of the outage once rsyslogd was back (a batch written to
    # the connection rsyslogd closed is sent again on the new one).
    assert sorted(set(ids), key=lambda x: int(x[3:])) == [f"ev-{i}" for i in range(400)]
    assert outs.status()[0]["sent"] >= 400


def test_rsyslog_over_tls(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    rs = Rsyslog(tmp_path / "rs", free_port(), "tls", tls=(cert, key)).start()
    try:
        outs = Outputs([syslog(rs.port, "tls", ca_certs=cert)])
        outs.start()
        for i in range(100):
            outs.emit(make_event(i))
        outs.close(5)
        wait_for(lambda: len(rs.lines()) == 100, what=f"100 lines over TLS: {rs.log()}")
        assert json.loads(rs.lines()[42][8])["event"]["id"] == "ev-42"
        strict = Outputs([syslog(rs.port, "tls")])  # no CA: the self-signed cert is refused
        strict.start()
        strict.emit(make_event(1))
        wait_for(lambda: "CERTIFICATE_VERIFY_FAILED" in strict.status()[0]["last_error"],
                 what="verification failure")
        strict.close(0.5)
        assert len(rs.lines()) == 100
    finally:
        rs.stop()


def test_udp_without_a_receiver_is_noticed_then_delivers(tmp_path: Path) -> None:
    """UDP is at most once: datagrams sent while nobody listens are lost, but the refusal
    (ICMP, on a host that sends it) is counted and seen in status, and sending goes on."""
    port = free_port()
    outs = Outputs([syslog(port)])
    outs.start()
    try:
        for i in range(20):
            outs.emit(make_event(i))
            time.sleep(0.01)
        wait_for(lambda: outs.status()[0]["retries"] >= 1, what="a refusal noticed")
        assert "Connection refused" in outs.status()[0]["last_error"]
        rs = Rsyslog(tmp_path / "rs", port, "udp").start()
        try:
            for i in range(20, 40):
                outs.emit(make_event(i))
            wait_for(lambda: {f"ev-{i}" for i in range(20, 40)} <= {
                json.loads(line[8])["event"]["id"] for line in rs.lines()},
                what="the events sent once it listens")
        finally:
            rs.stop()
    finally:
        outs.close(2)


@pytest.mark.parametrize(("options", "expected"), [
    ({"protocol": "relp"}, "options.protocol: must be udp, tcp or tls"),
    ({"facility": "local9"}, "options.facility: unknown"),
    ({"alert_severity": "loud"}, "options.alert_severity: must be one of"),
    ({"sd_id": "nopen"}, "options.sd_id: NAME@NUMBER"),
    ({"app_name": "two words"}, "options.app_name: 1-48 printable ASCII"),
    ({"max_message_bytes": 100}, "options.max_message_bytes: must be at least 480"),
])
def test_config_mistakes_name_the_key(options: dict[str, Any], expected: str) -> None:
    with pytest.raises(ConfigError) as err:
        from_dict({"type": "syslog", "options": options}, OutputConfig, "hub.yaml",
                  prefix="outputs[1]")
    assert f"outputs[1].{expected}" in str(err.value), str(err.value)
