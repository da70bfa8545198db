"""ZeroMQ PUB of every emitted event, with a topic subscribers can prefix-filter on.

Message: two frames, ``[topic, msgpack(flat event)]``. The topic is
``f"{event.kind}.{category}.{action}"`` (e.g. ``alert.process.exec``,
``event.network.connect``), so ``SUB`` prefixes select by kind (``alert.``) or kind and
category (``event.network.``).
"""

from __future__ import annotations

from typing import Any

import msgpack
import zmq


def topic_of(ev: dict[str, Any]) -> str:
    cats = ev.get("event.category")
    cat = cats[0] if isinstance(cats, list) and cats else (cats or "unknown")
    return f"{ev.get('event.kind', 'event')}.{cat}.{ev.get('event.action', 'unknown')}"


def decode(frames: list[bytes]) -> tuple[str, dict[str, Any]]:
    """``(topic, flat event)`` of one published message (for tap and other subscribers)."""
    return frames[0].decode(), msgpack.unpackb(frames[1], raw=False)


class Publisher:
    def __init__(self, ctx: zmq.Context, endpoint: str, snd_hwm: int = 100_000) -> None:
        self.sock = ctx.socket(zmq.PUB)
        self.sock.setsockopt(zmq.SNDHWM, snd_hwm)
        self.sock.setsockopt(zmq.LINGER, 2000)
        self.sock.bind(endpoint)
        self.endpoint = self.sock.getsockopt_string(zmq.LAST_ENDPOINT)
        self._pack = msgpack.Packer(use_bin_type=True, default=str).pack
        self._topics: dict[tuple[Any, Any, Any], bytes] = {}
        self.sent = 0

    def publish(self, events: list[dict[str, Any]]) -> None:
        send, pack, topics = self.sock.send_multipart, self._pack, self._topics
        for ev in events:
            cats = ev.get("event.category")
            key = (ev.get("event.kind"), cats[0] if isinstance(cats, list) and cats else cats,
                   ev.get("event.action"))
            topic = topics.get(key)
            if topic is None:
                topic = topics[key] = topic_of(ev).encode()
            send((topic, pack(ev)))
        self.sent += len(events)

    def close(self) -> None:
        self.sock.close()
