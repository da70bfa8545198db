"""A TCP (optionally TLS) connection to a server that never talks back: Logstash's ``tcp``
input, syslog over TCP (RFC 6587) and TLS (RFC 5425).

TCP has no application acknowledgements: bytes written just before the peer dies can vanish
in kernel buffers. :meth:`StreamConnection.peer_closed`, asked before each batch, turns the
common case (the server restarted between batches) into a clean reconnect and resend; the
rest is at-most-once. :meth:`StreamConnection.close` half-closes and reads to the peer's EOF,
so a TLS server's unread session tickets never make the kernel reset the connection and the
server drop the last batches.
"""

from __future__ import annotations

import select
import socket
import ssl


def tls_context(ca_certs: str = "", verify_certs: bool = True, certfile: str = "",
                keyfile: str = "") -> ssl.SSLContext:
    """A client context: the system CAs or ``ca_certs``; a client certificate for mutual
    TLS when ``certfile`` is given."""
    ctx = ssl.create_default_context(cafile=ca_certs or None)
    if not verify_certs:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if certfile:
        ctx.load_cert_chain(certfile, keyfile or None)
    return ctx


class StreamConnection:
    def __init__(self, host: str, port: int, timeout_s: float,
                 tls: ssl.SSLContext | None = None) -> None:
        self.host, self.port, self.timeout_s, self.tls = host, port, timeout_s, tls
        self.sock: socket.socket | None = None

    @property
    def connected(self) -> bool:
        return self.sock is not None

    def connect(self) -> None:
        sock = socket.create_connection((self.host, self.port), self.timeout_s)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        if self.tls is not None:
            try:
                sock = self.tls.wrap_socket(sock, server_hostname=self.host)
            except Exception:
                sock.close()
                raise
        self.sock = sock

    def peer_closed(self) -> bool:
        """Whether the server closed its end (a readable socket that reads EOF)."""
        sock = self.sock
        if sock is None:
            return True
        readable, _, _ = select.select([sock], [], [], 0)
        if not readable:
            return False
        # Readable can also mean a TLS record with no data (a TLS 1.3 session ticket): read
        # without blocking, or recv would wait for data the server never sends.
        timeout = sock.gettimeout()
        sock.settimeout(0)
        try:
            return sock.recv(4096) == b""  # the server never talks: data means nothing
        except (ssl.SSLWantReadError, BlockingIOError):
            return False
        except OSError:  # reset by the peer
            return True
        finally:
            sock.settimeout(timeout)

    def ensure(self) -> None:
        """Connected, to a server that has not closed the connection since the last batch."""
        if self.sock is None or self.peer_closed():
            self.disconnect()
            self.connect()

    def sendall(self, data: bytes) -> None:
        assert self.sock is not None
        self.sock.sendall(data)

    def disconnect(self) -> None:
        if self.sock is not None:
            try:
                self.sock.close()
            finally:
                self.sock = None

    def close(self) -> None:
        """Half-close and wait (a while) for the server's EOF before closing."""
        sock = self.sock
        if sock is None:
            return
        try:
            sock.shutdown(socket.SHUT_WR)
            sock.settimeout(min(self.timeout_s, 5.0))
            while sock.recv(4096):
                pass
        except (OSError, ValueError):
            pass
        finally:
            self.disconnect()
