"""TCP connect/accept/listen over IPv4 and IPv6 on loopback, and DNS query datagrams to a
local UDP port 53 listener (sendto, connected send, sendmsg)."""

from __future__ import annotations

import errno
import os
import socket
import struct

import pytest


def mine(action):
    return lambda e: e["event.action"] == action and e["process.pid"] == os.getpid()


@pytest.mark.parametrize("family,host,ntype", [
    (socket.AF_INET, "127.0.0.1", "ipv4"),
    (socket.AF_INET6, "::1", "ipv6"),
])
def test_listen_connect_accept(events, family, host, ntype):
    with socket.socket(family, socket.SOCK_STREAM) as srv:
        srv.bind((host, 0))
        srv.listen()
        sport = srv.getsockname()[1]
        with socket.socket(family, socket.SOCK_STREAM) as cli:
            cli.connect((host, sport))
            cport = cli.getsockname()[1]
            conn, _ = srv.accept()
            conn.close()

    (lst,) = events.wait(lambda e: mine("listen")(e) and e["destination.port"] == sport)
    assert lst["destination.ip"] == host
    assert lst["network.direction"] == "ingress"
    assert lst["network.transport"] == "tcp" and lst["network.type"] == ntype
    assert "source.ip" not in lst

    (con,) = events.wait(lambda e: mine("connect")(e) and e["destination.port"] == sport)
    assert con["destination.ip"] == host
    assert con["source.ip"] == host and con["source.port"] == cport
    assert con["network.direction"] == "egress" and con["event.outcome"] == "success"
    assert con["network.transport"] == "tcp" and con["network.type"] == ntype
    assert con["event.category"] == ["network"]

    (acc,) = events.wait(lambda e: mine("accept")(e) and e["destination.port"] == sport)
    assert acc["source.ip"] == host and acc["source.port"] == cport
    assert acc["destination.ip"] == host
    assert acc["network.direction"] == "ingress" and acc["network.type"] == ntype


def test_nonblocking_and_refused_connects_are_reported(events, port):
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen()
        sport = srv.getsockname()[1]
        with socket.socket() as cli:
            cli.setblocking(False)
            assert cli.connect_ex(("127.0.0.1", sport)) in (0, errno.EINPROGRESS)
    (con,) = events.wait(lambda e: mine("connect")(e) and e["destination.port"] == sport)
    assert con["event.outcome"] in ("unknown", "success")

    with socket.socket() as cli:   # nothing listens on the free port
        assert cli.connect_ex(("127.0.0.1", port)) == errno.ECONNREFUSED
    (con,) = events.wait(lambda e: mine("connect")(e) and e["destination.port"] == port)
    assert con["event.outcome"] == "failure"


def dns_query(name: str, qid: int = 0x1234) -> bytes:
    labels = b"".join(bytes([len(p)]) + p.encode() for p in name.split("."))
    return struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0) + labels + b"\0" + struct.pack("!HH", 1, 1)


@pytest.fixture
def dns_listener():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.bind(("127.0.0.1", 53))
    except OSError as exc:
        s.close()
        pytest.skip(f"cannot bind 127.0.0.1:53: {exc}")
    try:
        yield s
    finally:
        s.close()


def test_dns_query_datagrams(events, dns_listener):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as c:
        c.sendto(dns_query("sendto.threatseer-test.example"), ("127.0.0.1", 53))
        c.sendmsg([dns_query("sendmsg.threatseer-test.example")], [], 0, ("127.0.0.1", 53))
        sport = c.getsockname()[1]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as c:
        c.connect(("127.0.0.1", 53))
        c.send(dns_query("connected.threatseer-test.example"))
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as c:  # v6 (nobody listens)
        c.sendto(dns_query("v6.threatseer-test.example"), ("::1", 53))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as c:   # not DNS: port 5353
        c.sendto(dns_query("mdns.threatseer-test.example"), ("127.0.0.1", 5353))

    def query(name):
        return lambda e: mine("dns-query")(e) and e.get("dns.question.name") == name

    (ev,) = events.wait(query("sendto.threatseer-test.example"))
    assert ev["destination.ip"] == "127.0.0.1" and ev["destination.port"] == 53
    assert ev["network.transport"] == "udp" and ev["network.protocol"] == "dns"
    assert ev["network.type"] == "ipv4"
    assert ev["event.category"] == ["network"] and ev["event.type"] == ["protocol", "info"]
    (ev,) = events.wait(query("sendmsg.threatseer-test.example"))
    assert ev["source.port"] == sport
    (ev,) = events.wait(query("connected.threatseer-test.example"))
    assert ev["destination.ip"] == "127.0.0.1" and ev["destination.port"] == 53
    (ev,) = events.wait(query("v6.threatseer-test.example"))
    assert ev["destination.ip"] == "::1" and ev["network.type"] == "ipv6"
    events.settle(0.2)
    assert not [e for e in events.events if e.get("dns.question.name", "").startswith("mdns.")]
