"""What a sensor holds in memory for a hub slow to acknowledge is bounded by bytes, not only
by the window's batch count (the sensor's peak RSS, bench/sensor_bench.py): bodies sent and
unacknowledged (sensor/ship.py INFLIGHT_MAX_BYTES) and bodies the spool keeps beside its
file (sensor/spool.py CACHE_MAX_BYTES). Nothing is lost: what waits is sent once acks come,
from the file. Real ZeroMQ sockets on loopback."""

from __future__ import annotations

import os
import time

import zmq

from tests.conftest import free_port
from threatseer.common import wire
from threatseer.sensor import ship, spool
from threatseer.sensor.ship import HubSink
from threatseer.sensor.spool import Spool


def incompressible(i: int) -> list[dict]:
    return [{"event.action": "open", "n": i, "pad": os.urandom(25_000).hex()} for _ in range(4)]


def test_unacknowledged_bytes_and_cached_bodies_are_bounded_and_nothing_is_lost(tmp_path):
    port = free_port()
    ctx = zmq.Context()
    hub = ctx.socket(zmq.ROUTER)
    hub.bind(f"tcp://127.0.0.1:{port}")
    sink = HubSink(f"tcp://127.0.0.1:{port}", "s1", "h", spool=Spool(str(tmp_path / "s.db")),
                   window=64, context=ctx)
    try:
        for i in range(30):  # ~200 KB bodies (LZ4 cannot shrink random hex much)
            sink.send(incompressible(i))
        got: list[list[bytes]] = []
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and hub.poll(300):
            got.append(hub.recv_multipart())
        body = len(got[0][2])
        assert body > 100_000
        # the window (64 batches) would have let all 30 go; the byte bound held them
        assert 1 <= len(got) <= ship.INFLIGHT_MAX_BYTES // body + 1 < 30
        assert sink.spool._cache_bytes <= spool.CACHE_MAX_BYTES + body
        # acks that a send reads on its way let the held batches go from that send (the
        # loop is not woken for replies a send has read)
        first = len(got)
        for frames in got:
            batch = wire.decode(frames[1:])
            hub.send_multipart([frames[0], wire.encode_ack(batch.epoch, batch.seq)])
        time.sleep(0.3)
        sink.send(incompressible(30))
        more = []
        while hub.poll(300):
            more.append(hub.recv_multipart())
        assert len(more) >= 2 and wire.decode(more[0][1:]).seq == first + 1
        got = more
        seqs = []
        deadline = time.monotonic() + 20
        while (not seqs or seqs[-1] < 31) and time.monotonic() < deadline:
            for frames in got:
                batch = wire.decode(frames[1:])
                if batch.seq not in seqs:
                    seqs.append(batch.seq)
                hub.send_multipart([frames[0], wire.encode_ack(batch.epoch, batch.seq)])
            got = []
            sink.flush(0.2)
            while hub.poll(100):
                got.append(hub.recv_multipart())
        assert seqs == list(range(first + 1, 32))  # all of them, in order, bodies read back
        assert sink.spool.count <= 1
    finally:
        sink.close(0)
        hub.close(0)
        ctx.term()
