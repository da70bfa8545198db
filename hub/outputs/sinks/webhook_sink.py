"""Webhooks: a JSON body per event (or per batch) POSTed to a URL, for chat (Slack,
Mattermost, Teams) and any HTTP receiver, as falcosidekick does for Falco.

HTTP with the standard library's ``http.client``: one kept-alive connection per output, no
connection pool or retry layer of its own to disagree with the worker's (one request at a
time per output, retries and backoff are the worker's), and no dependency added to the hub.

Outcomes per request: 2xx delivered; 408, 429 and 5xx sent again later (after the server's
``Retry-After`` when it gives one), as are connection failures; any other status (a bad URL,
a body the receiver refuses) is counted as failed, with the status in ``last_error``, so one
bad notification never blocks the rest. Redirects are not followed. Once a request was sent,
its event is not sent again unless the server said so: a chat message is not posted twice
because a later event of the batch failed.
"""

from __future__ import annotations

import http.client
import json
import logging
from typing import Any
from urllib.parse import urlsplit

from threatseer.common import __version__

from ..config import OutputConfig, WebhookOptions
from ..template import PRESETS, BodyTemplate
from .base import SendResult, Sink
from .stream import tls_context

log = logging.getLogger("threatseer.hub.outputs")
RETRY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})
MAX_RETRY_AFTER_S = 300.0


class WebhookSink(Sink):
    def __init__(self, cfg: OutputConfig, opts: WebhookOptions) -> None:
        self.opts = opts
        url = urlsplit(opts.url)
        self.https = url.scheme == "https"
        self.host = url.hostname or ""
        self.port = url.port or (443 if self.https else 80)
        self.path = (url.path or "/") + (f"?{url.query}" if url.query else "")
        # What errors may show of the URL: never its path or query (they carry tokens).
        self.where = f"{url.scheme}://{self.host}:{self.port}"
        self.tls = tls_context(opts.ca_certs, opts.verify_certs, opts.certfile,
                               opts.keyfile) if self.https else None
        self.template = BodyTemplate(opts.template if opts.format == "custom"
                                     else PRESETS[opts.format])
        self.headers = {"Content-Type": "application/json",
                        "User-Agent": f"threatseer/{__version__}", **opts.headers}
        self._conn: http.client.HTTPConnection | None = None

    def connect(self) -> None:
        if self.https:
            conn: http.client.HTTPConnection = http.client.HTTPSConnection(
                self.host, self.port, timeout=self.opts.timeout_s, context=self.tls)
        else:
            conn = http.client.HTTPConnection(self.host, self.port, timeout=self.opts.timeout_s)
        try:
            conn.connect()
        except OSError as exc:
            conn.close()
            raise ConnectionError(f"{self.where}: {exc.strerror or exc}") from None
        self._conn = conn

    def body(self, events: list[dict[str, Any]]) -> bytes:
        """The JSON body of one request: an event's, or (batch: true) an array of them."""
        if self.opts.batch:
            doc: Any = [self.template.render(e) for e in events]
        else:
            doc = self.template.render(events[0])
        return json.dumps(doc, default=str, separators=(",", ":")).encode()

    def send(self, events: list[dict[str, Any]]) -> SendResult:
        result = SendResult()
        step = len(events) if self.opts.batch else 1
        for start in range(0, len(events), step):
            chunk = events[start:start + step]
            try:
                status, retry_after = self._post(self.body(chunk))
            except (OSError, http.client.HTTPException) as exc:
                self.disconnect()
                result.retry = events[start:]
                result.error = f"{self.where}: {getattr(exc, 'strerror', None) or exc}"
                result.reconnect = True
                return result
            if 200 <= status < 300:
                result.sent += len(chunk)
            elif status in RETRY_STATUSES:
                result.retry = events[start:]
                result.error = f"{self.where}: HTTP {status}, sending again later"
                result.retry_after = retry_after
                return result
            else:
                result.failed += len(chunk)
                result.error = f"{self.where}: HTTP {status}: refused"
                log.warning("webhook %s refused %d event(s) with HTTP %d", self.where,
                            len(chunk), status)
        return result

    def _post(self, body: bytes) -> tuple[int, float]:
        """(status, Retry-After seconds or 0) of one request on the kept-alive connection.

        A kept-alive connection the server has closed meanwhile fails at once: that request is
        made again on a new connection, once (as HTTP clients do for idempotent retries)."""
        reused = self._conn is not None
        try:
            return self._request(body)
        except (ConnectionError, http.client.RemoteDisconnected):
            if not reused:
                raise
            self.disconnect()
            return self._request(body)

    def _request(self, body: bytes) -> tuple[int, float]:
        if self._conn is None:
            self.connect()
        assert self._conn is not None
        self._conn.request(self.opts.method, self.path, body=body, headers=self.headers)
        resp = self._conn.getresponse()
        resp.read()  # drain, so the connection can carry the next request
        if resp.will_close:
            self.disconnect()
        return resp.status, _retry_after(resp.getheader("Retry-After"))

    def disconnect(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            finally:
                self._conn = None


def _retry_after(value: str | None) -> float:
    """Seconds from a Retry-After header (delta-seconds; an HTTP date counts as unknown)."""
    try:
        return min(max(float(value or 0), 0.0), MAX_RETRY_AFTER_S)
    except ValueError:
        return 0.0
