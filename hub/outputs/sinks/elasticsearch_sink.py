"""Elasticsearch via the official client's bulk API.

Every document is written with ``create`` and ``_id`` = event.id, so a batch resent after a
lost response does not duplicate anything: Elasticsearch answers 409 for the copies, which
count as delivered. Per item: 429 and 5xx are resent with backoff; any other refusal (a
mapping conflict, a bad document) goes to a dead-letter file with the reason and counts as
failed, so one bad event does not block the stream.

Index names: a data stream named as Elastic's naming scheme has it,
``logs-<dataset>-<namespace>`` (``logs-threatseer.events-default``: Discover's and the Security
app's ``logs-*`` patterns find it), each document carrying its ``data_stream.*`` and
``event.dataset``; or ``<index>-YYYY.MM.DD`` from the event's @timestamp (index_mode daily).
Requests are gzip-compressed unless ``compression: false``; an ingest ``pipeline`` is named on
every bulk request when set.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from elasticsearch import ApiError, Elasticsearch

from threatseer.common.ecs import to_json

from .. import es_template
from ..config import ElasticsearchOptions, OutputConfig
from .base import SendResult, Sink


def client_for(opts: ElasticsearchOptions) -> Elasticsearch:
    """A client that does not retry by itself (the output's worker does, with backoff)."""
    kwargs: dict[str, Any] = {
        "request_timeout": opts.request_timeout_s, "max_retries": 0, "retry_on_timeout": False,
    }
    if opts.api_key:
        kwargs["api_key"] = opts.api_key
    elif opts.username:
        kwargs["basic_auth"] = (opts.username, opts.password)
    if opts.ca_certs:
        kwargs["ca_certs"] = opts.ca_certs
    if not opts.verify_certs:
        kwargs["verify_certs"] = False
    if opts.client_cert:
        kwargs["client_cert"] = opts.client_cert
        if opts.client_key:
            kwargs["client_key"] = opts.client_key
    if opts.compression:
        kwargs["http_compress"] = True
    return Elasticsearch(opts.hosts, **kwargs)


class ElasticsearchSink(Sink):
    def __init__(self, cfg: OutputConfig, opts: ElasticsearchOptions) -> None:
        self.opts = opts
        self.data_stream = opts.index_mode == "data_stream"
        self.target = opts.target
        self.stream_fields = es_template.data_stream_fields(opts)
        self.bulk_args: dict[str, Any] = {"pipeline": opts.pipeline} if opts.pipeline else {}
        self.dead_letter = Path(opts.dead_letter_path or
                                Path(cfg.spill_dir) / f"{cfg.label}.dead-letter.jsonl")
        self.duplicates = 0
        self._client: Elasticsearch | None = None
        self._template_done = not opts.setup_template

    def connect(self) -> None:
        if self._client is None:
            self._client = client_for(self.opts)
        self._client.info()
        if not self._template_done:
            es_template.install(self._client, self.opts)
            self._template_done = True

    def _index_for(self, event: dict[str, Any]) -> str:
        if self.data_stream:
            return self.target
        ts = event.get("@timestamp")
        day = ts[:10] if isinstance(ts, str) and len(ts) >= 10 and ts[4] == "-" else \
            time.strftime("%Y-%m-%d", time.gmtime())
        return f"{self.target}-{day.replace('-', '.')}"

    def send(self, events: list[dict[str, Any]]) -> SendResult:
        try:
            return self._bulk(events)
        except ApiError as exc:
            if exc.meta.status != 413:
                raise
        # Request too large for the cluster (http.max_content_length): halve it; a single
        # document that is still too large is dead-lettered.
        if len(events) == 1:
            self._write_dead([{"status": 413, "error": "request too large", "event": events[0]}])
            return SendResult(failed=1, error="a document larger than the cluster accepts")
        half = len(events) // 2
        first, second = self.send(events[:half]), self.send(events[half:])
        return SendResult(sent=first.sent + second.sent, failed=first.failed + second.failed,
                          retry=first.retry + second.retry, error=first.error or second.error)

    def _bulk(self, events: list[dict[str, Any]]) -> SendResult:
        assert self._client is not None
        # Serialised here (values JSON cannot hold become strings), so one odd value cannot
        # make the client's serialiser fail the batch over and over.
        ops: list[str] = []
        stream = self.stream_fields
        for event in events:
            ops.append(json.dumps({"create": {"_index": self._index_for(event),
                                              "_id": str(event.get("event.id", ""))}}))
            ops.append(to_json({**event, **stream} if stream else event))
        resp = self._client.bulk(operations=ops, **self.bulk_args)
        result = SendResult()
        if not resp.get("errors"):
            result.sent = len(events)
            return result
        dead: list[dict[str, Any]] = []
        for event, item in zip(events, resp["items"], strict=False):
            info = next(iter(item.values()))
            status = info.get("status", 500)
            if status < 300:
                result.sent += 1
            elif status == 409:  # already there: an earlier attempt got through
                result.sent += 1
                self.duplicates += 1
            elif status == 429 or status >= 500:
                result.retry.append(event)
                result.error = f"bulk item {status}: {_reason(info)}"
            else:
                result.failed += 1
                dead.append({"status": status, "error": _reason(info), "event": event})
        if len(resp["items"]) < len(events):  # a truncated answer: resend what it left out
            result.retry.extend(events[len(resp["items"]):])
        if dead:
            self._write_dead(dead)
            result.error = result.error or f"{len(dead)} documents refused (dead-lettered)"
        return result

    def _write_dead(self, dead: list[dict[str, Any]]) -> None:
        self.dead_letter.parent.mkdir(parents=True, exist_ok=True)
        with self.dead_letter.open("a") as f:
            for d in dead:
                f.write(json.dumps(d, default=str) + "\n")

    def disconnect(self) -> None:
        pass  # the client's connection pool reconnects by itself

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


def _reason(info: dict[str, Any]) -> str:
    err = info.get("error")
    if isinstance(err, dict):
        return f"{err.get('type', '')}: {err.get('reason', '')}"
    return str(err)
