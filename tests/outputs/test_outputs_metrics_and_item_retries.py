"""Prometheus metrics of the outputs, and Elasticsearch per-item 429/5xx retries."""

from __future__ import annotations

import gzip
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CollectorRegistry

from tests.outputs.conftest import make_event, wait_for
from threatseer.hub.outputs import OutputConfig, Outputs
from threatseer.hub.outputs.sinks import make_sink


def test_metrics_per_output(redis_at: Any, redis_server: Any, spill_dir: str) -> None:
    dead = redis_at()
    reg = CollectorRegistry()
    outs = Outputs([
        OutputConfig(type="redis", name="up", options={"url": redis_server.url}),
        OutputConfig(type="redis", name="down", queue_size=10, retry_max_s=0.2,
                     options={"url": dead.url, "timeout_s": 0.5}),
    ], registry=reg)
    outs.start()
    for i in range(100):
        outs.emit(make_event(i))

    def val(metric: str, output: str) -> float | None:
        return reg.get_sample_value(metric, {"output": output, "type": "redis"})

    wait_for(lambda: val("threatseer_output_sent_total", "up") == 100, what="sent metric")
    assert val("threatseer_output_connected", "up") == 1
    assert val("threatseer_output_queue_depth", "up") == 0
    assert val("threatseer_output_connected", "down") == 0
    assert val("threatseer_output_sent_total", "down") == 0
    # The queue's 10, plus the first event if the worker took it before the others came.
    assert val("threatseer_output_queue_depth", "down") in (10, 11)
    assert 80 <= val("threatseer_output_dropped_total", "down") <= 90
    assert val("threatseer_output_retries_total", "down") >= 1
    outs.close(1)
    assert outs.status()[1]["dropped"] == 100  # overflow, plus what was left at close
    # close() unregisters, so a new Outputs (config reload) can register in the same registry
    assert val("threatseer_output_queue_depth", "up") is None
    again = Outputs([OutputConfig(type="redis", name="up", options={"url": redis_server.url})],
                    registry=reg)
    again.start()
    assert val("threatseer_output_queue_depth", "up") == 0
    again.close(1)


class FlakyBulk(BaseHTTPRequestHandler):
    """A FAKE Elasticsearch bulk endpoint: noida-db never answers per-item 429 or 503, so
    this one does, for the first two requests, to show those items are resent (and only
    they). Everything else it acknowledges."""

    calls: list[list[str]] = []
    max_docs = 0  # >0: answer 413 for bulk requests with more documents

    def log_message(self, *args: Any) -> None:
        pass

    def _reply(self, body: dict[str, Any], status: int = 200) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("X-Elastic-Product", "Elasticsearch")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        self._reply({"version": {"number": "8.15.0"}, "tagline": "You Know, for Search"})

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if self.headers.get("Content-Encoding") == "gzip":  # the sink compresses by default
            body = gzip.decompress(body)
        lines = body.splitlines()
        ids = [json.loads(x)["create"]["_id"] for x in lines[0::2]]
        if FlakyBulk.max_docs and len(ids) > FlakyBulk.max_docs:
            FlakyBulk.calls.append(ids)
            self._reply({"error": "request too large"}, 413)
            return
        n = len(FlakyBulk.calls)
        FlakyBulk.calls.append(ids)
        items = []
        for i, _id in enumerate(ids):
            status = 201
            if n == 0 and i % 3 == 0:
                status = 429
            elif n == 1 and i == 0:
                status = 503
            elif n == 0 and i == 1:
                status = 409
            items.append({"create": {"_id": _id, "status": status, **(
                {"error": {"type": "x", "reason": "busy"}} if status >= 400 else {})}})
        self._reply({"errors": any(it["create"]["status"] >= 300 for it in items),
                     "items": items})

    do_PUT = do_POST  # the 9.x client sends _bulk as PUT


def test_es_items_429_and_5xx_are_resent(spill_dir: str) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), FlakyBulk)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    FlakyBulk.calls, FlakyBulk.max_docs = [], 0
    try:
        outs = Outputs([OutputConfig(
            type="elasticsearch", batch_size=9, retry_max_s=0.2, spill_dir=spill_dir,
            options={"hosts": [f"http://127.0.0.1:{server.server_port}"],
                     "setup_template": False})])
        outs.start()
        for i in range(9):
            outs.emit(make_event(i))
        outs.close(10)
    finally:
        server.shutdown()
        server.server_close()
    calls = FlakyBulk.calls
    assert calls[0] == [f"ev-{i}" for i in range(9)]
    assert calls[1] == ["ev-0", "ev-3", "ev-6"]  # the 429s, nothing else
    assert calls[2] == ["ev-0"]  # the 503
    st = outs.status()[0]
    assert (st["sent"], st["failed"], st["retries"]) == (9, 0, 2)


def test_es_request_too_large_is_split(spill_dir: str) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), FlakyBulk)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    # Two "calls" pretend to be history so the flaky item statuses are not used.
    FlakyBulk.calls, FlakyBulk.max_docs = [[], []], 3
    cfg = OutputConfig(type="elasticsearch", spill_dir=spill_dir, options={
        "hosts": [f"http://127.0.0.1:{server.server_port}"], "setup_template": False})
    try:
        sink = make_sink(cfg)  # driven directly: one batch of exactly 10
        sink.connect()
        result = sink.send([make_event(i) for i in range(10)])
        sink.close()
    finally:
        server.shutdown()
        server.server_close()
    assert (result.sent, result.failed, result.retry) == (10, 0, [])
    sizes = [len(ids) for ids in FlakyBulk.calls[2:]]
    assert sizes == [10, 5, 2, 3, 5, 2, 3]  # 413, halves, 413, halves ...
