"""Redis: a list (RPUSH of JSON documents, what Beats' redis output does and Logstash's redis
input reads), a stream (XADD, trimmed with approximate MAXLEN) or pub/sub (PUBLISH).

A batch is one RPUSH, or one MULTI/EXEC of XADDs, so it lands whole or not at all; a
connection lost after the server applied it but before the reply makes the worker send it
again (at-least-once: the stream entries carry ``id`` = event.id, list items have
``event.id`` inside the JSON). Pub/sub has no storage: subscribers absent at the time miss
events, by design of Redis.
"""

from __future__ import annotations

from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from threatseer.common.ecs import to_json

from ..config import OutputConfig, RedisOptions
from .base import SendResult, Sink


class RedisSink(Sink):
    def __init__(self, cfg: OutputConfig, opts: RedisOptions) -> None:
        self.opts = opts
        self._r: redis.Redis | None = None

    def connect(self) -> None:
        # The worker retries with backoff, so the client's own retries are turned off.
        extra: dict[str, Any] = {}
        if self.opts.password:
            extra["password"] = self.opts.password
        if self.opts.url.startswith("rediss://"):
            # TLS: the server's certificate must name the host (redis-py < 6 did not check)
            extra["ssl_check_hostname"] = True
        self._r = redis.Redis.from_url(
            self.opts.url, socket_timeout=self.opts.timeout_s,
            socket_connect_timeout=self.opts.timeout_s, retry_on_timeout=False,
            retry=Retry(NoBackoff(), 0), **extra,
        )
        self._r.ping()

    def send(self, events: list[dict[str, Any]]) -> SendResult:
        r = self._r
        assert r is not None
        key = self.opts.key
        if self.opts.mode == "list":
            r.rpush(key, *[to_json(e) for e in events])
        elif self.opts.mode == "stream":
            pipe = r.pipeline(transaction=True)
            for e in events:
                pipe.xadd(key, {"id": str(e.get("event.id", "")), "event": to_json(e)},
                          maxlen=self.opts.maxlen, approximate=True)
            pipe.execute()
        else:
            pipe = r.pipeline(transaction=False)
            for e in events:
                pipe.publish(key, to_json(e))
            pipe.execute()
        return SendResult(sent=len(events))

    def disconnect(self) -> None:
        if self._r is not None:
            try:
                self._r.close()
            finally:
                self._r = None
