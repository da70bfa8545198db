"""Syslog: RFC 5424 messages over UDP (RFC 5426), TCP (RFC 6587) or TLS (RFC 5425).

One message per event::

    <PRI>1 TIMESTAMP HOSTNAME APP-NAME - MSGID [SD] MSG

PRI from the facility and the severity (alerts and other events have their own); TIMESTAMP
the event's ``@timestamp`` (when it happened, microseconds, UTC); HOSTNAME the host it
happened on (``host.name``) or this hub's name; MSGID the ``event.action``; structured data
(when ``sd_id`` is set) the score, kind, action, event id and rules; MSG the nested ECS JSON
document or one readable line. No BOM: MSG is RFC 5424's MSG-ANY (a BOM in front of JSON
breaks most receivers' JSON parsing).

Python's ``logging.handlers.SysLogHandler`` is not used: it writes RFC 3164 lines (no
version, no structured data, no TLS, no octet counting), which is what this output exists to
improve on. Delivery: UDP at most once (a refused datagram is noticed, by the next send, only
on a host that answers with ICMP); TCP and TLS as the Logstash output (hub/outputs/sinks/
stream.py): at least once across clean reconnects.
"""

from __future__ import annotations

import re
import socket
from datetime import UTC, datetime
from typing import Any

from threatseer.common.ecs import to_json

from ..config import SYSLOG_FACILITIES, SYSLOG_SEVERITIES, OutputConfig, SyslogOptions
from ..events import to_text
from .base import SendResult, Sink
from .stream import StreamConnection, tls_context

# RFC 5424 TIMESTAMP (FULL-DATE "T" FULL-TIME, at most 6 fraction digits)
_TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,6})?(Z|[+-]\d\d:\d\d)\Z")
_NOT_PRINTABLE = re.compile(r"[^\x21-\x7e]")
_SD_ESCAPE = re.compile(r'(["\\\]])')


def header_field(value: Any, limit: int) -> str:
    """A header field: printable US-ASCII without spaces, at most ``limit`` characters; "-"
    (RFC 5424's NILVALUE) when empty."""
    text = _NOT_PRINTABLE.sub("_", str(value or ""))[:limit]
    return text or "-"


def timestamp(ev: dict[str, Any]) -> str:
    ts = ev.get("@timestamp")
    if isinstance(ts, str) and _TIMESTAMP.match(ts):
        return ts
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _sd_value(value: Any) -> str:
    return _SD_ESCAPE.sub(r"\\\1", str(value))


class Rfc5424:
    """Formats events as RFC 5424 messages (bytes, without transport framing)."""

    def __init__(self, opts: SyslogOptions, hub_hostname: str | None = None) -> None:
        self.opts = opts
        facility = SYSLOG_FACILITIES[opts.facility]
        self.pri_alert = f"<{facility * 8 + SYSLOG_SEVERITIES[opts.alert_severity]}>1 "
        self.pri_event = f"<{facility * 8 + SYSLOG_SEVERITIES[opts.event_severity]}>1 "
        self.app = header_field(opts.app_name, 48)
        self.hub_host = header_field(hub_hostname or socket.gethostname(), 255)

    def message(self, ev: dict[str, Any]) -> bytes:
        opts = self.opts
        pri = self.pri_alert if ev.get("event.kind") == "alert" else self.pri_event
        host = header_field(ev.get("host.name") or ev.get("agent.id"), 255) \
            if opts.hostname == "event" else self.hub_host
        msgid = header_field(ev.get("event.action"), 32)
        head = f"{pri}{timestamp(ev)} {host} {self.app} - {msgid} {self.structured(ev)} "
        body = to_json(ev) if opts.format == "json" else to_text(ev)
        data = (head + body).encode("utf-8", "replace")
        if len(data) > opts.max_message_bytes:  # cut on a character boundary
            data = data[:opts.max_message_bytes].decode("utf-8", "ignore").encode()
        return data

    def structured(self, ev: dict[str, Any]) -> str:
        if not self.opts.sd_id:
            return "-"
        rules = ",".join(str(i.get("rule")) for i in ev.get("threatseer.indicators") or ()
                         if isinstance(i, dict))
        params = (("score", ev.get("event.risk_score", 0)), ("kind", ev.get("event.kind")),
                  ("action", ev.get("event.action")), ("id", ev.get("event.id")),
                  ("rules", rules))
        inner = " ".join(f'{k}="{_sd_value(v)}"' for k, v in params if v not in (None, ""))
        return f"[{self.opts.sd_id} {inner}]"


class SyslogSink(Sink):
    def __init__(self, cfg: OutputConfig, opts: SyslogOptions) -> None:
        self.opts = opts
        self.format = Rfc5424(opts)
        self.port = opts.effective_port
        tls = tls_context(opts.ca_certs, opts.verify_certs, opts.certfile, opts.keyfile) \
            if opts.protocol == "tls" else None
        self.stream = StreamConnection(opts.host, self.port, opts.timeout_s, tls) \
            if opts.protocol != "udp" else None
        self.udp: socket.socket | None = None

    def connect(self) -> None:
        if self.stream is not None:
            self.stream.connect()
            return
        family, kind, proto, _, addr = socket.getaddrinfo(
            self.opts.host, self.port, type=socket.SOCK_DGRAM)[0]
        sock = socket.socket(family, kind, proto)
        sock.settimeout(self.opts.timeout_s)
        try:
            sock.connect(addr)  # connected: an ICMP refusal surfaces on a later send
        except OSError:
            sock.close()
            raise
        self.udp = sock

    def frame(self, message: bytes) -> bytes:
        if self.opts.framing == "octet-counting":
            return b"%d %s" % (len(message), message)
        return message.replace(b"\n", b" ") + b"\n"

    def send(self, events: list[dict[str, Any]]) -> SendResult:
        if self.stream is not None:
            self.stream.ensure()
            self.stream.sendall(b"".join(self.frame(self.format.message(e)) for e in events))
            return SendResult(sent=len(events))
        if self.udp is None:
            self.connect()
        assert self.udp is not None
        for i, ev in enumerate(events):
            try:
                self.udp.send(self.format.message(ev))
            except OSError as exc:  # e.g. refused: what went before is gone or delivered
                return SendResult(sent=i, retry=events[i:], reconnect=True,
                                  error=f"udp {self.opts.host}:{self.port}: "
                                        f"{exc.strerror or exc}")
        return SendResult(sent=len(events))

    def disconnect(self) -> None:
        if self.stream is not None:
            self.stream.disconnect()
        elif self.udp is not None:
            self.udp.close()
            self.udp = None

    def close(self) -> None:
        if self.stream is not None:
            self.stream.close()
        else:
            self.disconnect()


__all__ = ["Rfc5424", "SyslogSink", "header_field"]
