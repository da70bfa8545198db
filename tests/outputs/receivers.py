"""Real receivers for the notification outputs, on 127.0.0.1 and free ports: an HTTP(S)
server for webhooks (the standard library's, answering what a test tells it) and rsyslogd for
syslog (its own config, pid file and output file in a temp dir; no /dev/log, no system
files), both stoppable and restartable on the same port mid-test."""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import json
import shutil
import socket
import ssl
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.conftest import stop_processes
from tests.outputs.conftest import wait_port

RSYSLOGD = shutil.which("rsyslogd") or "/usr/sbin/rsyslogd"


def self_signed(tmp: Path) -> tuple[str, str]:
    """A self-signed certificate for 127.0.0.1 (cert path, key path)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = tmp / "cert.pem", tmp / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return str(cert_path), str(key_path)


class HttpReceiver:
    """An HTTP server that records each request (method, path, headers, JSON body) and
    answers with the statuses queued in ``answers`` (then 200)."""

    def __init__(self, port: int, tls: tuple[str, str] | None = None) -> None:
        self.port, self.tls = port, tls
        self.requests: list[dict[str, Any]] = []
        self.answers: list[tuple[int, dict[str, str]]] = []
        self.lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._connections: set[Any] = set()

    def start(self) -> HttpReceiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as real receivers

            def log_message(self, *args: Any) -> None:
                pass

            def setup(self) -> None:
                super().setup()
                with receiver.lock:
                    receiver._connections.add(self.connection)

            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with receiver.lock:
                    status, headers = receiver.answers.pop(0) if receiver.answers else (
                        200, {})
                    receiver.requests.append({
                        "method": self.command, "path": self.path, "status": status,
                        "headers": dict(self.headers), "body": json.loads(body)})
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            do_PUT = do_POST  # noqa: N815

        server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        server.daemon_threads = True
        if self.tls is not None:
            ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ctx.load_cert_chain(*self.tls)
            server.socket = ctx.wrap_socket(server.socket, server_side=True)
        self._server = server
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return self

    def delivered(self) -> list[dict[str, Any]]:
        """Bodies of the requests answered 2xx."""
        with self.lock:
            return [r["body"] for r in self.requests if 200 <= r["status"] < 300]

    def stop(self) -> None:
        """Down, as a crashed server: the listener and every open connection closed."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        with self.lock:
            for conn in self._connections:
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
            self._connections.clear()


# Every field rsyslog parsed from the RFC 5424 header, then the message, one line each.
_TEMPLATE = ('%pri%|%protocol-version%|%timereported:::date-rfc3339%|%hostname%|%app-name%|'
             '%procid%|%msgid%|%structured-data%|%msg%\\n')


class Rsyslog:
    """rsyslogd listening on one protocol (udp, tcp or tls) and writing what it parsed to
    ``out``, one ``|``-separated line per message (see ``_TEMPLATE``)."""

    def __init__(self, workdir: Path, port: int, protocol: str,
                 tls: tuple[str, str] | None = None) -> None:
        self.dir, self.port, self.protocol, self.tls = workdir, port, protocol, tls
        self.dir.mkdir(parents=True, exist_ok=True)
        self.out = self.dir / "received.log"
        self.conf = self.dir / "rsyslog.conf"
        self.proc: subprocess.Popen[bytes] | None = None
        self.conf.write_text(self._config())

    def _config(self) -> str:
        lines = [f'global(workDirectory="{self.dir}" maxMessageSize="64k"'
                 + (f' defaultNetstreamDriver="gtls" defaultNetstreamDriverCAFile='
                    f'"{self.tls[0]}" defaultNetstreamDriverCertFile="{self.tls[0]}" '
                    f'defaultNetstreamDriverKeyFile="{self.tls[1]}"' if self.tls else "")
                 + ")"]
        if self.protocol == "udp":
            lines += ['module(load="imudp")', f'input(type="imudp" address="127.0.0.1" '
                                              f'port="{self.port}")']
        else:
            driver = (' streamDriver.name="gtls" streamDriver.mode="1" '
                      'streamDriver.authMode="anon"' if self.protocol == "tls" else "")
            lines += [f'module(load="imtcp"{driver})',
                      f'input(type="imtcp" address="127.0.0.1" port="{self.port}")']
        lines += [f'template(name="fields" type="string" string="{_TEMPLATE}")',
                  f'action(type="omfile" file="{self.out}" template="fields" '
                  f'flushOnTXEnd="on" asyncWriting="off")']
        return "\n".join(lines) + "\n"

    def start(self) -> Rsyslog:
        log = open(self.dir / "rsyslogd.log", "ab")  # noqa: SIM115 (kept for the process)
        self.proc = subprocess.Popen(
            [RSYSLOGD, "-n", "-f", str(self.conf), "-i", str(self.dir / "rsyslogd.pid")],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        if self.protocol == "udp":
            time.sleep(0.5)  # nothing to connect to: give it time to bind
            if self.proc.poll() is not None:
                raise RuntimeError(f"rsyslogd exited: {self.log()}")
        else:
            try:
                wait_port(self.port)
            except TimeoutError:
                self.stop()
                raise RuntimeError(f"rsyslogd did not listen: {self.log()}") from None
        return self

    def log(self) -> str:
        return (self.dir / "rsyslogd.log").read_text(errors="replace")[-3000:]

    def lines(self) -> list[list[str]]:
        try:
            text = self.out.read_text()
        except OSError:
            return []
        return [line.split("|", 8) for line in text.splitlines() if line]

    def stop(self) -> None:
        if self.proc is None:
            return
        stop_processes(self.proc, timeout=15)
        self.proc = None
