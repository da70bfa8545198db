"""What the security tests share: an attacker's (or a well-behaved) sensor speaking the real
wire format over a real CURVE DEALER, and reading a hub's file output.

Test files import this as ``security_helpers`` (conftest.py puts this folder on sys.path).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import zmq

from threatseer.common import ecs, wire
from threatseer.common.keys import curve_client, read_key


def exec_event(sensor_id: str, i: int, **fields: Any) -> dict[str, Any]:
    cat, typ = ecs.CATEGORIES["exec"]
    ev = {"@timestamp": "2026-11-28T03:00:00.000000Z", "event.kind": "event",
          "event.category": cat, "event.type": typ, "event.action": "exec",
          "event.id": f"{sensor_id}:t-{i}", "process.pid": 1000 + i,
          "process.executable": "/usr/bin/true", "process.name": "true",
          "process.args": ["true", str(i)], "process.parent.pid": 1}
    ev.update(fields)
    return ev


class WireSensor:
    """A DEALER that sends hand-made batches (``epoch``, ``seq`` and events as given) and reads
    the hub's acks: what an attacker holding a sensor key can send, or a minimal honest
    sensor."""

    def __init__(self, endpoint: str, sensor_id: str, secret: Path | None = None,
                 server: Path | None = None, epoch: int = 1) -> None:
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.SNDHWM, 100_000)
        if secret is not None and server is not None:
            curve_client(self.sock, read_key(str(secret)), read_key(str(server)))
        self.sock.connect(endpoint)
        self.sensor_id = sensor_id
        self.epoch = epoch
        self.seq = 0
        self.acks: list[tuple[int, int]] = []

    def send(self, events: list[Any], seq: int | None = None, epoch: int | None = None,
             sensor_id: str | None = None, compress: bool = True) -> int:
        if seq is None:
            self.seq += 1
            seq = self.seq
        batch = wire.Batch(sensor_id or self.sensor_id, seq, events, host="host-" + self.sensor_id,
                           epoch=self.epoch if epoch is None else epoch)
        self.sock.send_multipart(wire.encode(batch, compress=compress))
        return seq

    def send_frames(self, frames: list[bytes]) -> None:
        self.sock.send_multipart(frames)

    def read_acks(self, timeout_s: float) -> list[tuple[int, int]]:
        """Acks that arrive within ``timeout_s`` (returns as soon as one is there)."""
        got = []
        if self.sock.poll(int(timeout_s * 1000)):
            while self.sock.poll(0):
                reply = wire.decode_reply(self.sock.recv_multipart()[-1])
                if isinstance(reply, tuple):  # else a command (the hub's exec policy)
                    got.append(reply)
        self.acks += got
        return got

    def wait_ack(self, seq: int, timeout_s: float, epoch: int | None = None) -> bool:
        """Whether batch ``seq`` (of ``epoch``) is acknowledged within ``timeout_s``."""
        epoch = self.epoch if epoch is None else epoch
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if any(e == epoch and s >= seq for e, s in self.acks):
                return True
            self.read_acks(min(0.2, max(0.0, deadline - time.monotonic())))
        return any(e == epoch and s >= seq for e, s in self.acks)

    def close(self) -> None:
        self.sock.close(0)
        self.ctx.term()


def file_output(path: Path) -> dict[str, Any]:
    return {"type": "file", "name": "file", "options": {"path": str(path)},
            "flush_interval_s": 0.05, "spill_dir": str(path.parent / "spill")}


def read_events(path: Path) -> list[dict[str, Any]]:
    """The flat events a file output wrote so far."""
    if not path.exists():
        return []
    return [ecs.flatten(json.loads(line)) for line in path.read_text().splitlines() if line]


def malformed_flood(endpoint: str, secret: str, server: str, seconds: float,
                    sent: Any) -> None:
    """(A process of its own) send malformed batches as fast as the hub takes them for
    ``seconds``, under sensor id ``hostile``; how many in ``sent`` (a shared int).

    Each has a fresh sequence number (a repeated one would be skipped as a duplicate without
    being opened) and is one of: every event refused by the schema, an undecompressable body,
    an LZ4 bomb, a body of the wrong count, a header that does not decode. Bodies are made
    once, so the sender spends its time sending, as a real attacker would.
    """
    import lz4.frame
    import msgspec

    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SNDHWM, 1000)
    curve_client(sock, read_key(secret), read_key(server))
    sock.connect(endpoint)
    poisons = [{"event.category": [{}]}, {"process.pid": 1 << 63}, {"process.pid": True},
               {"event.type": [[["deep"]]]}]
    bodies = [(20, wire.encode_body([exec_event("hostile", k, **p) for k in range(20)], True))
              for p in poisons]
    bodies += [(3, b"\x04\x22\x4d\x18garbage"),
               (3, lz4.frame.compress(b"\x91" + b"\0" * (8 << 20))),
               (5, wire.encode_body([exec_event("hostile", 0)], True))]
    pack = msgspec.msgpack.encode
    seq = n = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for count, body in bodies:
            seq += 1
            header = pack({"v": wire.VERSION, "sid": "hostile", "seq": seq, "n": count,
                           "t": 0, "e": 1, "z": 1})
            if seq % 8 == 0:
                header = header[:-1] + b"\xc1"  # not msgpack
            try:
                sock.send_multipart([header, body], zmq.NOBLOCK)
                n += 1
            except zmq.Again:
                time.sleep(0.0005)
        while sock.poll(0):
            sock.recv_multipart()
    sent.value = n
    sock.close(5000)  # what is queued still reaches the hub (counted there)
    ctx.term()
