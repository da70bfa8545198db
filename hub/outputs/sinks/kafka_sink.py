"""Kafka via confluent-kafka (librdkafka): acks=all, compression, idempotent producer.

The message key is the event's subject (container image, or host + executable), so the
default partitioner puts one subject's events in one partition, in order. The value is the
nested ECS document; the ``event.id`` header carries the de-duplication key. A batch counts as
sent only by its delivery reports; messages that report an error are sent again by the
worker with backoff. A broker that loses its state (restart of an in-memory broker) makes the
idempotent producer fail fatally: the producer is then rebuilt and the batch resent.
"""

from __future__ import annotations

import logging
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Producer

from threatseer.common.ecs import to_json

from ..config import KafkaOptions, OutputConfig
from ..events import subject
from .base import SendResult, Sink

log = logging.getLogger("threatseer.hub.outputs.kafka")

# Errors after which resending cannot help.
PERMANENT = {
    KafkaError.MSG_SIZE_TOO_LARGE,
    KafkaError.INVALID_MSG,
    KafkaError.INVALID_RECORD,
    KafkaError.TOPIC_AUTHORIZATION_FAILED,
}


class KafkaSink(Sink):
    def __init__(self, cfg: OutputConfig, opts: KafkaOptions) -> None:
        self.opts = opts
        self.conf: dict[str, Any] = {
            "bootstrap.servers": opts.bootstrap_servers,
            "acks": "all",
            "enable.idempotence": opts.idempotence,
            "compression.type": opts.compression,
            "message.timeout.ms": int(opts.delivery_timeout_s * 1000),
            "linger.ms": 5,
            "client.id": f"threatseer-hub-{cfg.label}",
        }
        self.conf.update(opts.config)
        self._producer: Producer | None = None
        self._fatal = False

    def connect(self) -> None:
        if self._producer is None or self._fatal:
            self._producer = Producer({**self.conf, "error_cb": self._on_error,
                                       "logger": log})
            self._fatal = False
        # Metadata for the topic: proves a broker answers (and auto-creates the topic there).
        self._producer.list_topics(self.opts.topic, timeout=min(10.0, self.opts.delivery_timeout_s))

    def _on_error(self, err: KafkaError) -> None:
        if err.fatal():
            self._fatal = True

    def send(self, events: list[dict[str, Any]]) -> SendResult:
        producer = self._producer
        assert producer is not None
        reports: list[KafkaError | None] = [None] * len(events)
        done = [False] * len(events)

        def report(i: int):
            def cb(err: KafkaError | None, _msg: Any) -> None:
                reports[i] = err
                done[i] = True
            return cb

        for i, event in enumerate(events):
            while True:
                try:
                    producer.produce(
                        self.opts.topic, value=to_json(event), key=subject(event),
                        headers=[("event.id", str(event.get("event.id", "")))],
                        on_delivery=report(i),
                    )
                    break
                except BufferError:  # librdkafka's queue is full: serve callbacks, try again
                    producer.poll(0.1)
                except KafkaException as exc:
                    err = exc.args[0] if exc.args else None
                    if isinstance(err, KafkaError) and err.code() in PERMANENT:
                        reports[i], done[i] = err, True  # refused before sending: failed
                        break
                    if isinstance(err, KafkaError) and (err.fatal() or
                                                        err.code() == KafkaError._FATAL):
                        self._fatal = True  # e.g. the broker forgot our producer id
                    raise
        left = producer.flush(self.opts.delivery_timeout_s + 5.0)
        result = SendResult()
        for i, event in enumerate(events):
            err = reports[i]
            if not done[i]:
                result.retry.append(event)
                result.error = f"{left} messages without delivery report"
            elif err is None:
                result.sent += 1
            elif err.code() in PERMANENT:
                result.failed += 1
                result.error = err.str()
            else:
                result.retry.append(event)
                result.error = err.str()
        # Undelivered messages mean the broker is unreachable (or forgot us): reconnect first.
        result.reconnect = bool(result.retry) or self._fatal
        return result

    def idle(self) -> None:
        if self._producer is not None:
            self._producer.poll(0)

    def disconnect(self) -> None:
        """Only a fatal error needs a new producer; otherwise librdkafka reconnects itself."""
        if self._fatal and self._producer is not None:
            self._producer.purge()
            self._producer = None

    def close(self) -> None:
        if self._producer is not None:
            self._producer.flush(5.0)
            self._producer = None
