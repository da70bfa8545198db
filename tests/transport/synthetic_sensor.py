"""A sensor process without eBPF: the real HubSink and Spool, with generated events.

Event ``i`` (0-based) has ``event.id`` ``"<sensor id>:<i>"`` and belongs to batch
``i // batch + 1``: batches are fixed-size, so after a restart the spool's next sequence number
says where the stream resumes (nothing generated twice, nothing skipped). It sends ``--total``
events at about ``--rate`` events/s, then waits until the hub acknowledged everything and
exits 0 (exit 3 when ``--drain-timeout`` passes first). Progress lines go to stdout.

Usage: python synthetic_sensor.py ENDPOINT[,ENDPOINT...] SENSOR_ID STATE_DIR --total N [--batch B]
       [--rate R] [--secret FILE --server-key FILE] [--spool-mib M] [--resend S]
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time

from threatseer.common import ecs
from threatseer.common.keys import read_key
from threatseer.sensor.ship import HubSink
from threatseer.sensor.spool import SPOOL_FILE, Spool


def event(sensor_id: str, i: int, alert_every: int = 0) -> dict:
    if alert_every and i % alert_every == 0:  # cat /etc/shadow: an alert in the default bundle
        cat, typ = ecs.CATEGORIES["open"]
        return {"@timestamp": "2026-11-28T03:00:00.000000Z", "event.kind": "event",
                "event.category": cat, "event.type": typ, "event.action": "open",
                "event.id": f"{sensor_id}:{i}", "process.pid": 1000 + i % 30000,
                "process.executable": "/usr/bin/cat", "process.name": "cat",
                "process.args": ["cat", "/etc/shadow"], "file.path": "/etc/shadow",
                "threatseer.open.flags": ["read"]}
    cat, typ = ecs.CATEGORIES["exec"]
    return {"@timestamp": "2026-11-28T03:00:00.000000Z", "event.kind": "event",
            "event.category": cat, "event.type": typ, "event.action": "exec",
            "event.id": f"{sensor_id}:{i}", "process.pid": 1000 + i % 30000,
            "process.executable": "/usr/bin/true", "process.name": "true",
            "process.args": ["true", str(i)], "process.parent.pid": 1}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("endpoint")
    ap.add_argument("sensor_id")
    ap.add_argument("state_dir")
    ap.add_argument("--total", type=int, required=True)
    ap.add_argument("--batch", type=int, default=500)
    ap.add_argument("--rate", type=float, default=20_000)
    ap.add_argument("--secret")
    ap.add_argument("--server-key")
    ap.add_argument("--spool-mib", type=float, default=256)
    ap.add_argument("--resend", type=float, default=1.0)
    ap.add_argument("--drain-timeout", type=float, default=120)
    ap.add_argument("--alert-every", type=int, default=0,
                    help="every Nth event reads /etc/shadow (0: none)")
    a = ap.parse_args()
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    curve = (read_key(a.secret), read_key(a.server_key)) if a.secret else None
    spool = Spool(os.path.join(a.state_dir, SPOOL_FILE), int(a.spool_mib * (1 << 20)))
    sink = HubSink(a.endpoint.split(","), a.sensor_id, "synthetic-host", spool=spool,
                   identity={"host.name": "synthetic-host", "agent.id": a.sensor_id},
                   curve=curve, resend_after_s=a.resend)
    i = (spool.next_seq - 1) * a.batch
    print(f"start at event {i} (epoch {spool.epoch}, {spool.count} batches spooled)",
          flush=True)
    t0 = time.monotonic()
    start_i = i
    while i < a.total and not stop:
        n = min(a.batch, a.total - i)
        sink.send([event(a.sensor_id, k, a.alert_every) for k in range(i, i + n)])
        i += n
        ahead = (i - start_i) / a.rate - (time.monotonic() - t0)
        while ahead > 0 and not stop:
            sink.flush(min(ahead, 0.05))
            ahead = (i - start_i) / a.rate - (time.monotonic() - t0)
    print(f"generated up to {i}; pending {sink.pending}", flush=True)
    deadline = time.monotonic() + a.drain_timeout
    while sink.pending and not stop and time.monotonic() < deadline:
        sink.flush(0.05)
    done = not sink.pending
    print(f"done={done} acked_events={sink.sent_events} resends={sink.resends} "
          f"failovers={sink.failovers} dropped={sink.dropped_events}", flush=True)
    sink.close(0)
    return 0 if done else 3


if __name__ == "__main__":
    sys.exit(main())
