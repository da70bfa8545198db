"""Logstash over TCP with the json_lines codec, optionally TLS (Logstash's ``tcp`` input).

The connection (peer-closed checks before each batch, orderly close) is
:class:`~.stream.StreamConnection`'s: at least once across clean reconnects, else at most
once (docs/outputs.md).
"""

from __future__ import annotations

from typing import Any

from threatseer.common.ecs import to_json

from ..config import LogstashOptions, OutputConfig
from .base import SendResult, Sink
from .stream import StreamConnection, tls_context


class LogstashSink(Sink):
    def __init__(self, cfg: OutputConfig, opts: LogstashOptions) -> None:
        self.opts = opts
        tls = tls_context(opts.ca_certs, opts.verify_certs, opts.certfile, opts.keyfile) \
            if opts.tls else None
        self.conn = StreamConnection(opts.host, opts.port, opts.timeout_s, tls)

    def connect(self) -> None:
        self.conn.connect()

    def send(self, events: list[dict[str, Any]]) -> SendResult:
        self.conn.ensure()
        self.conn.sendall("".join(to_json(e) + "\n" for e in events).encode())
        return SendResult(sent=len(events))

    def disconnect(self) -> None:
        self.conn.disconnect()

    def close(self) -> None:
        self.conn.close()
