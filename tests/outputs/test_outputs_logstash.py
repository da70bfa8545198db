"""Logstash output against a real TCP listener (plain and TLS with a self-signed certificate),
including a listener restart between batches."""

from __future__ import annotations

import ssl
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import free_port
from tests.outputs.conftest import JsonLinesListener, make_event, wait_for
from tests.outputs.receivers import self_signed
from threatseer.hub.outputs import OutputConfig, Outputs


@pytest.fixture
def certs(tmp_path: Path) -> tuple[str, str]:
    """A self-signed certificate for 127.0.0.1 (cert path, key path)."""
    return self_signed(tmp_path)


def output(port: int, **options: Any) -> OutputConfig:
    return OutputConfig(type="logstash", options={"host": "127.0.0.1", "port": port,
                                                  "timeout_s": 2.0, **options},
                        retry_max_s=0.3, flush_interval_s=0.1, batch_size=100)


def test_json_lines_over_tcp() -> None:
    listener = JsonLinesListener(free_port()).start()
    try:
        outs = Outputs([output(listener.port)])
        outs.start()
        for i in range(1000):
            outs.emit(make_event(i))
        outs.close(10)
        wait_for(lambda: len(listener.lines) == 1000, what="all lines")
        assert [d["event"]["id"] for d in listener.lines] == [f"ev-{i}" for i in range(1000)]
        assert listener.lines[1]["destination"]["ip"] == "10.0.0.1"
    finally:
        listener.stop()


def test_tls_verified_with_self_signed_ca(certs: tuple[str, str]) -> None:
    cert, key = certs
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    listener = JsonLinesListener(free_port(), tls=ctx).start()
    try:
        outs = Outputs([output(listener.port, tls=True, ca_certs=cert)])
        outs.start()
        for i in range(200):
            outs.emit(make_event(i))
        outs.close(10)
        wait_for(lambda: len(listener.lines) == 200,
                 what=f"all lines over TLS: {len(listener.lines)}, {outs.status()}")
        assert outs.status()[0]["sent"] == 200
        # Without the CA the certificate is refused: nothing is sent, the error says why.
        strict = Outputs([output(listener.port, tls=True)])
        strict.start()
        strict.emit(make_event(1))
        wait_for(lambda: "CERTIFICATE_VERIFY_FAILED" in strict.status()[0]["last_error"],
                 what="verification failure")
        strict.close(0.5)
        assert strict.status()[0]["sent"] == 0 and len(listener.lines) == 200
    finally:
        listener.stop()


def test_reconnects_after_listener_restart() -> None:
    port = free_port()
    listener = JsonLinesListener(port).start()
    outs = Outputs([output(port)])
    outs.start()
    try:
        for i in range(100):
            outs.emit(make_event(i))
        wait_for(lambda: len(listener.lines) == 100, what="first part")
        listener.stop()
        time.sleep(0.3)
        again = JsonLinesListener(port).start()
        for i in range(100, 200):
            outs.emit(make_event(i))
        outs.close(10)
        wait_for(lambda: len(again.lines) == 100, what="second part after restart")
        assert [d["event"]["id"] for d in again.lines] == [f"ev-{i}" for i in range(100, 200)]
        assert outs.status()[0]["sent"] == 200
        again.stop()
    finally:
        listener.stop()
