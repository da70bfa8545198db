"""Logstash output against a real TCP listener (plain and TLS with a self-signed certificate),
including a listener restart between batches."""

from __future__ import annotations

import datetime
import json
import socket
import ssl
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.conftest import free_port
from tests.outputs.conftest import make_event, wait_for
from threatseer.hub.outputs import OutputConfig, Outputs


class JsonLinesListener:
    """A TCP server reading json_lines like Logstash's tcp input (one thread per client)."""

    def __init__(self, port: int, tls: ssl.SSLContext | None = None) -> None:
        self.port, self.tls = port, tls
        self.lines: list[dict[str, Any]] = []
        self.connections = 0
        self._sock: socket.socket | None = None
        self._clients: list[socket.socket] = []

    def start(self) -> JsonLinesListener:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))
        sock.listen()
        self._sock = sock
        threading.Thread(target=self._accept, args=(sock,), daemon=True).start()
        return self

    def _accept(self, sock: socket.socket) -> None:
        while True:
            try:
                conn, _ = sock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._read, args=(conn,), daemon=True).start()

    def _read(self, conn: socket.socket) -> None:
        try:
            if self.tls is not None:
                conn = self.tls.wrap_socket(conn, server_side=True)
            self._clients.append(conn)
            with conn, conn.makefile("rb") as f:
                for line in f:
                    self.lines.append(json.loads(line))
        except (OSError, ssl.SSLError, ValueError):
            pass

    def stop(self) -> None:
        if self._sock is not None:
            self._sock.shutdown(socket.SHUT_RDWR)  # wakes the accept() blocked on it
            self._sock.close()
            self._sock = None
        for c in self._clients:
            try:
                c.shutdown(socket.SHUT_RDWR)
                c.close()
            except OSError:
                pass
        self._clients.clear()


@pytest.fixture
def certs(tmp_path: Path) -> tuple[str, str]:
    """A self-signed certificate for 127.0.0.1 (cert path, key path)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    import ipaddress
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return str(cert_path), str(key_path)


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
        wait_for(lambda: len(listener.lines) == 200, what="all lines over TLS")
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
