"""One output's worker thread: take batches from its buffer, send, retry with backoff, count."""

from __future__ import annotations

import contextlib
import logging
import random
import threading
import time
from typing import Any

from .buffer import EventBuffer
from .config import OutputConfig
from .metrics import LatencyHistogram
from .sinks.base import Sink

log = logging.getLogger("threatseer.hub.outputs")

FIRST_DELAY_S = 0.1


class OutputWorker:
    def __init__(self, cfg: OutputConfig, sink: Sink, buffer: EventBuffer) -> None:
        self.cfg = cfg
        self.sink = sink
        self.buffer = buffer
        self.connected = False
        self.sent = 0
        self.failed = 0
        self.retries = 0
        self.last_error = ""
        self.in_flight = 0  # events taken from the buffer, not yet delivered or refused
        # Seconds from emit to delivered (or refused for good), per event from memory.
        self.latency = LatencyHistogram()
        self._abort = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"output-{cfg.label}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, deadline: float) -> None:
        """Deliver what is queued until ``deadline`` (monotonic), then give up on the rest."""
        self.buffer.close()
        self._thread.join(max(0.0, deadline - time.monotonic()))
        if self._thread.is_alive():
            self._abort.set()
            self._thread.join(5.0)
        self.buffer.abandon()
        if self.buffer.spill is not None:
            self.buffer.spill.close()

    def status(self) -> dict[str, Any]:
        b = self.buffer
        return {
            "name": self.cfg.label, "type": self.cfg.type, "connected": self.connected,
            "queue_depth": b.depth + self.in_flight, "sent": self.sent, "failed": self.failed,
            "dropped": b.dropped, "retries": self.retries, "spilled": b.spilled,
            "spill_depth": b.spill.pending if b.spill else 0, "last_error": self.last_error,
        }

    def _run(self) -> None:
        self._connect_early()
        while not self._abort.is_set():
            try:
                batch = self.buffer.get_batch(self.cfg.batch_size, self.cfg.flush_interval_s)
                if batch:
                    self._deliver(batch)
                elif self.buffer.closed and self.buffer.empty():
                    break
                else:
                    self._idle()
            except Exception as exc:  # a bug or a full disk: say so, keep the output alive
                log.exception("output %s: worker error", self.cfg.label)
                self.connected = False
                self.last_error = f"worker error: {exc}"
                self._abort.wait(1.0)
        try:
            self.sink.close()
        except Exception as exc:  # closing is best effort
            log.warning("output %s: close: %s", self.cfg.label, exc)

    def _connect_early(self) -> None:
        """Connect before the first event, so status() is true from the start (and the
        Elasticsearch template is installed at start); failures are retried on send."""
        try:
            self.sink.connect()
            self.connected = True
        except Exception as exc:  # retried with backoff when events come
            self._failed_attempt(exc)

    def _idle(self) -> None:
        if not self.connected:
            return
        try:
            self.sink.idle()
        except Exception as exc:  # any sink failure means "not connected"
            self._failed_attempt(exc)

    def _deliver(self, batch: list[dict[str, Any]]) -> None:
        pending = batch
        self.in_flight = len(batch)
        attempt = 0
        while pending:
            wait_at_least = 0.0
            try:
                if not self.connected:
                    self.sink.connect()
                    self.connected = True
                result = self.sink.send(pending)
                self.sent += result.sent
                self.failed += result.failed
                pending = result.retry
                self.in_flight = len(pending)
                if result.failed:
                    self.last_error = result.error
                if pending:
                    self.retries += 1
                    self.last_error = result.error or "some events were refused for now"
                    if result.reconnect:
                        self.connected = False
                        self.sink.disconnect()
                    wait_at_least = result.retry_after
            except Exception as exc:  # any sink failure: reconnect and retry
                self._failed_attempt(exc)
            if not pending:
                break
            delay = min(self.cfg.retry_max_s, FIRST_DELAY_S * 2**attempt)
            delay *= random.uniform(0.8, 1.2)
            delay = max(delay, min(wait_at_least, self.cfg.retry_max_s))  # Retry-After
            attempt = min(attempt + 1, 30)
            if self._abort.wait(delay):
                self.buffer.give_back(pending)
                self.in_flight = 0
                return
        self.buffer.commit()
        self.in_flight = 0
        if self.buffer.batch_times:
            self.latency.observe_since(self.buffer.batch_times, time.monotonic())

    def _failed_attempt(self, exc: Exception) -> None:
        self.retries += 1
        if self.connected or str(exc) != self.last_error:
            log.warning("output %s: %s", self.cfg.label, exc)
        self.connected = False
        self.last_error = str(exc) or type(exc).__name__
        with contextlib.suppress(Exception):  # already failing; the next connect says why
            self.sink.disconnect()
