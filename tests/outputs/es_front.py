"""A front for noida-db: what the Elasticsearch tests need that noida-db lacks.

Requests are passed to noida-db unchanged (bodies, gzip and all) and its answers returned
unchanged; the front adds three things a real Elasticsearch has and noida-db does not:

- TLS with client certificate authentication (``xpack.security.http.ssl.client_authentication:
  required``): a real TLS server (Python's ssl), so the client's certificate handling is tested
  for real.
- A record of each request's method, path and headers (to see gzip and ?pipeline= arrive).
- **A fake** of the ILM API (``PUT/GET _ilm/policy/<name>``), which noida-db does not have and
  no real Elasticsearch can be installed here to provide: it stores and returns the policy
  body as given, without checking it as Elasticsearch would (phases, actions, sizes), and
  nothing is rolled over or deleted.
"""

from __future__ import annotations

import gzip
import http.client
import json
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit


class EsFront:
    def __init__(self, backend_url: str, tls: ssl.SSLContext | None = None) -> None:
        target = urlsplit(backend_url)
        self.backend = (target.hostname or "127.0.0.1", target.port or 9200)
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        self.policies: dict[str, Any] = {}
        front = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _body(self) -> bytes:
                n = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(n) if n else b""

            def _answer(self, status: int, body: bytes, headers: list[tuple[str, str]]) -> None:
                self.send_response(status)
                for k, v in headers:
                    if k.lower() not in ("content-length", "transfer-encoding", "connection"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _ilm(self, body: bytes) -> None:
                name = self.path.split("?")[0].rsplit("/", 1)[-1]
                if self.command == "PUT":
                    if self.headers.get("Content-Encoding") == "gzip":
                        body = gzip.decompress(body)
                    front.policies[name] = json.loads(body)
                    out = {"acknowledged": True}
                    status = 200
                elif name in front.policies:
                    out, status = {name: front.policies[name]}, 200
                else:
                    out, status = {"error": f"no policy {name}"}, 404
                self._answer(status, json.dumps(out).encode(), [
                    ("Content-Type", "application/json"), ("X-Elastic-Product", "Elasticsearch")])

            def _relay(self) -> None:
                body = self._body()
                front.requests.append((self.command, self.path,
                                       {k.lower(): v for k, v in self.headers.items()}))
                if self.path.startswith("/_ilm/policy/"):
                    self._ilm(body)
                    return
                conn = http.client.HTTPConnection(*front.backend, timeout=30)
                try:
                    headers = {k: v for k, v in self.headers.items()
                               if k.lower() not in ("host", "connection")}
                    conn.request(self.command, self.path, body=body or None, headers=headers)
                    resp = conn.getresponse()
                    data = resp.read()
                    self._answer(resp.status, data, resp.getheaders())
                finally:
                    conn.close()

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _relay

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        if tls is not None:
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        scheme = "https" if tls is not None else "http"
        self.url = f"{scheme}://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self) -> EsFront:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
