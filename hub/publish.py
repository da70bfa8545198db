"""ZeroMQ PUB of every emitted event, with a topic subscribers can prefix-filter on.

Message: two frames, ``[topic, msgpack(array of flat events)]``; every event in one message
has that topic. The topic is ``f"{event.kind}.{category}.{action}"`` (e.g.
``alert.process.exec``, ``event.network.connect``), so ``SUB`` prefixes select by kind
(``alert.``) or kind and category (``event.network.``). Events of one batch are grouped per
topic: one send and one pack call per group instead of per event is most of the publish cost.
Packing is msgspec's (3x msgpack-python's speed); the bytes are plain msgpack.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import msgspec
import zmq

from threatseer.common.wire import array_header
from threatseer.hub._batch import group_by_topic

_decode = msgspec.msgpack.Decoder().decode


def topic_of(ev: dict[str, Any]) -> str:
    cats = ev.get("event.category")
    cat = cats[0] if isinstance(cats, list) and cats else (cats or "unknown")
    return f"{ev.get('event.kind', 'event')}.{cat}.{ev.get('event.action', 'unknown')}"


def _topic_bytes(ev: dict[str, Any]) -> bytes:
    return topic_of(ev).encode()


def decode(frames: list[bytes]) -> tuple[str, list[dict[str, Any]]]:
    """``(topic, flat events)`` of one published message (for tap and other subscribers)."""
    events = _decode(frames[1])
    if not isinstance(events, list):
        raise ValueError("published body is not an array")
    return frames[0].decode(), events


class Publisher:
    def __init__(self, ctx: zmq.Context, endpoint: str, snd_hwm: int = 100_000,
                 secure: Callable[[zmq.Socket], None] | None = None) -> None:
        self.ctx = ctx
        self.snd_hwm = snd_hwm
        self.secure = secure  # makes the socket a CURVE server (hub.transport), before bind
        self.sock = self._open(endpoint)
        self.endpoint = self.sock.getsockopt_string(zmq.LAST_ENDPOINT) if endpoint else ""
        # Private readers of the same messages (the hub's console process), each on a PAIR
        # socket: no subscription to propagate (a PUB drops what it sends before one
        # arrives), not affected by a rebind. Sent without blocking; the excess is counted.
        self.taps: list[zmq.Socket] = []
        self.tap_dropped = 0
        self.rebinds = 0
        # Anything msgspec cannot encode (a rule's odd extra_info) goes out as its text.
        self._pack = msgspec.msgpack.Encoder(enc_hook=str).encode
        self._topics: dict[tuple[Any, Any, Any], bytes] = {}
        self._pending: dict[bytes, list[tuple[int, bytes]]] = {}  # topic -> packed arrays
        self.sent = 0
        self.unpackable = 0  # events that could not be encoded (dropped from the PUB only)

    def _open(self, endpoint: str) -> zmq.Socket:
        sock = self.ctx.socket(zmq.PUB)
        sock.setsockopt(zmq.SNDHWM, self.snd_hwm)
        sock.setsockopt(zmq.LINGER, 2000)
        if self.secure is not None:
            self.secure(sock)
        try:
            if endpoint:  # none: only in-process taps read this hub's stream
                sock.bind(endpoint)
        except zmq.ZMQError:
            sock.close(linger=0)
            raise
        return sock

    def rebind(self) -> None:
        """Close and bind again (same endpoint): every subscriber reconnects and is
        authenticated again, so a revoked key is out. Subscribers miss what is published
        meanwhile (the PUB stream is best-effort per connection anyway)."""
        self.sock.close(linger=0)
        for _ in range(50):
            try:
                self.sock = self._open(self.endpoint)
                self.rebinds += 1
                return
            except zmq.ZMQError:  # the old listener is released by the I/O thread shortly
                time.sleep(0.02)
        self.sock = self._open(self.endpoint)

    def publish(self, events: list[dict[str, Any]]) -> None:
        """Send ``events`` now (:meth:`add`, then :meth:`flush`)."""
        self.add(events)
        self.flush()

    def add(self, events: list[dict[str, Any]]) -> None:
        """Pack ``events`` for the next :meth:`flush`, so a batch scored in slices still goes
        out as one message per topic (a send costs about as much as packing 30 events)."""
        groups = group_by_topic(events, self._topics, _topic_bytes)  # in C
        pack, pending = self._pack, self._pending
        for topic, group in groups.items():
            try:
                part = (len(group), pack(group))
            except Exception:  # e.g. an int beyond 64 bits from a rule: drop only that event
                part = self._pack_each(group)
            parts = pending.get(topic)
            if parts is None:
                pending[topic] = [part]
            else:
                parts.append(part)
        self.sent += len(events)

    def flush(self) -> None:
        """Send what :meth:`add` packed: one message per topic, its arrays joined."""
        pending, self._pending = self._pending, {}
        send, taps = self.sock.send_multipart, self.taps
        for topic, parts in pending.items():
            if len(parts) == 1:
                body = parts[0][1]
            else:  # one array of all items: each part without its own array header
                n = sum(count for count, _ in parts)
                body = b"".join([array_header(n), *(  # one copy: header joined too
                    memoryview(packed)[len(array_header(count)):] for count, packed in parts)])
            send((topic, body))
            for tap in taps:
                try:
                    tap.send_multipart((topic, body), zmq.NOBLOCK)
                except zmq.Again:  # the reader is behind by its whole queue
                    self.tap_dropped += 1

    def add_tap(self, sock: zmq.Socket) -> None:
        """Send every message to ``sock`` too (a PAIR socket connected to a private reader);
        called before the pipeline thread uses the publisher."""
        self.taps.append(sock)

    def _pack_each(self, group: list[dict[str, Any]]) -> tuple[int, bytes]:
        packed = []
        for ev in group:
            try:
                packed.append(self._pack(ev))
            except Exception:
                self.unpackable += 1
        return len(packed), array_header(len(packed)) + b"".join(packed)

    def close(self) -> None:
        self.sock.close()
        for tap in self.taps:
            tap.close()  # with the linger it was given: what is queued still goes
