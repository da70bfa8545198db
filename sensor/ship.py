"""Where a sensor's batches go: a hub over ZeroMQ PUSH, or JSON lines on stdout.

Sending must never stall the ring-buffer reader: the PUSH socket is used without blocking, and
batches the hub cannot take yet wait in a bounded queue in memory. When that queue is full the
oldest batch is dropped and counted, and the count goes out in the next health event.
"""

from __future__ import annotations

import json
import sys
from collections import deque
from typing import Any, TextIO

import zmq

from threatseer.sensor import ecs, wire

Event = dict[str, Any]


class StdoutSink:
    """``--stdout``: one nested ECS JSON document per line."""

    def __init__(self, identity: dict[str, Any] | None = None,
                 stream: TextIO | None = None) -> None:
        self.identity = identity or {}
        self.stream = stream or sys.stdout
        self.sent_events = 0
        self.dropped_events = 0
        self.pending = 0

    def send(self, events: list[Event]) -> None:
        write = self.stream.write
        identity = self.identity
        for ev in events:
            write(json.dumps(ecs.nest({**identity, **ev}), separators=(",", ":"), default=str))
            write("\n")
        self.stream.flush()
        self.sent_events += len(events)

    def flush(self, timeout_s: float = 0) -> None:
        self.stream.flush()

    def close(self, timeout_s: float = 0) -> None:
        self.flush()


class HubSink:
    """ZeroMQ PUSH of wire batches to a hub, numbered per sensor."""

    def __init__(
        self, endpoint: str, sensor_id: str, host: str, *, identity: dict[str, Any] | None = None,
        hwm: int = 1000, max_pending: int = 1000, context: zmq.Context | None = None,
    ) -> None:
        self.sensor_id = sensor_id
        self.host = host
        self.identity = identity or {}
        self.ctx = context or zmq.Context.instance()
        self.sock = self.ctx.socket(zmq.PUSH)
        self.sock.setsockopt(zmq.SNDHWM, hwm)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.connect(endpoint)
        self.seq = 0
        self._pending: deque[list[bytes]] = deque()
        self._pending_events: deque[int] = deque()
        self.max_pending = max_pending
        self.sent_events = 0
        self.sent_batches = 0
        self.dropped_events = 0

    @property
    def pending(self) -> int:
        return len(self._pending)

    def send(self, events: list[Event]) -> None:
        self.seq += 1
        frames = wire.encode(wire.Batch(self.sensor_id, self.seq, events, host=self.host,
                                        common=self.identity))
        self._pending.append(frames)
        self._pending_events.append(len(events))
        while len(self._pending) > self.max_pending:
            self._pending.popleft()
            self.dropped_events += self._pending_events.popleft()
        self.flush()

    def flush(self, timeout_s: float = 0) -> None:
        """Hand queued batches to ZeroMQ; wait up to ``timeout_s`` for room if asked."""
        while self._pending:
            if timeout_s and not self.sock.poll(int(timeout_s * 1000), zmq.POLLOUT):
                return
            try:
                self.sock.send_multipart(self._pending[0], flags=zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            self._pending.popleft()
            self.sent_events += self._pending_events.popleft()
            self.sent_batches += 1

    def close(self, timeout_s: float = 5.0) -> None:
        """Send what is queued (waiting up to ``timeout_s``), then close; what could not be sent
        is counted as dropped."""
        self.flush(timeout_s)
        self.dropped_events += sum(self._pending_events)
        self._pending.clear()
        self._pending_events.clear()
        self.sock.setsockopt(zmq.LINGER, int(timeout_s * 1000))
        self.sock.close()
