"""Logstash over TCP with the json_lines codec, optionally TLS (Logstash's ``tcp`` input).

TCP has no application acknowledgements: bytes written just before the peer dies can vanish
in kernel buffers. Before each batch the sink checks whether the peer has closed the
connection (a readable socket that returns EOF) and reconnects first, which turns the common
case (Logstash restarted between batches) into a clean resend; the rest is at-most-once.
"""

from __future__ import annotations

import select
import socket
import ssl
from typing import Any

from threatseer.common.ecs import to_json

from ..config import LogstashOptions, OutputConfig
from .base import SendResult, Sink


class LogstashSink(Sink):
    def __init__(self, cfg: OutputConfig, opts: LogstashOptions) -> None:
        self.opts = opts
        self._sock: socket.socket | None = None
        self._ctx: ssl.SSLContext | None = None
        if opts.tls:
            ctx = ssl.create_default_context(cafile=opts.ca_certs or None)
            if not opts.verify_certs:
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
            if opts.certfile:
                ctx.load_cert_chain(opts.certfile, opts.keyfile or None)
            self._ctx = ctx

    def connect(self) -> None:
        sock = socket.create_connection((self.opts.host, self.opts.port), self.opts.timeout_s)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        if self._ctx is not None:
            try:
                sock = self._ctx.wrap_socket(sock, server_hostname=self.opts.host)
            except Exception:
                sock.close()
                raise
        self._sock = sock

    def _peer_closed(self) -> bool:
        sock = self._sock
        assert sock is not None
        readable, _, _ = select.select([sock], [], [], 0)
        if not readable:
            return False
        # Readable can also mean a TLS record with no data (a TLS 1.3 session ticket): read
        # without blocking, or recv would wait for data Logstash never sends.
        timeout = sock.gettimeout()
        sock.settimeout(0)
        try:
            return sock.recv(4096) == b""  # Logstash never talks back: data means nothing
        except (ssl.SSLWantReadError, BlockingIOError):
            return False
        finally:
            sock.settimeout(timeout)

    def send(self, events: list[dict[str, Any]]) -> SendResult:
        if self._sock is None or self._peer_closed():
            self.disconnect()
            self.connect()
        assert self._sock is not None
        self._sock.sendall("".join(to_json(e) + "\n" for e in events).encode())
        return SendResult(sent=len(events))

    def disconnect(self) -> None:
        if self._sock is not None:
            try:
                self._sock.close()
            finally:
                self._sock = None

    def close(self) -> None:
        """Half-close and wait for the peer's EOF before closing.

        Closing a socket with unread input (a TLS server's session tickets) makes the kernel
        send a reset, and the peer then discards what it had received but not yet read: the
        last batches would vanish. Reading to EOF first makes the close orderly.
        """
        sock = self._sock
        if sock is None:
            return
        try:
            sock.shutdown(socket.SHUT_WR)
            sock.settimeout(min(self.opts.timeout_s, 5.0))
            while sock.recv(4096):
                pass
        except (OSError, ValueError):
            pass
        finally:
            self.disconnect()
