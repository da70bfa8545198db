"""2 gateways, 3 scorers and 4 sensors streaming 200k events through a real broker: one
scorer and one gateway are killed with SIGKILL mid-stream; every event id then appears exactly
once in the events topic and every alert is there.

What "exactly once in events (read_committed)" needs from the broker, and what tansu does:
it honours the last stable offset (an open transaction is invisible), commits offsets only
with their transaction, and fences a partition's previous owner; but its fetch responses
never list aborted transactions, so a read_committed client (librdkafka) also shows the
records of an aborted transaction. A scorer killed mid-transaction leaves exactly that. The
output workers drop such copies by their input position (hub/cluster/output_worker.py); the
test counts the raw records too, so the broker's gap stays visible.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from cluster_helpers import SENSOR, Member, read_topic, unpack

from threatseer.hub.cluster.output_worker import position
from threatseer.hub.cluster.status import read_status

SENSORS, PER_SENSOR, ALERT_EVERY = 4, 50_000, 997
TOTAL = SENSORS * PER_SENSOR


def scored(cfg: Any) -> int:
    docs = read_status(cfg.cluster, timeout=1.0)
    return sum(d.get("emitted", 0) for d in docs.values() if d.get("role") == "scorer")


def test_kill9_scorer_and_gateway_mid_stream_every_event_once(tmp_path: Path, broker: Any,
                                                               hub_cfg: Any) -> None:
    members: list[Member] = []
    sensors: list[subprocess.Popen[bytes]] = []
    try:
        gateways = [Member("gateway", hub_cfg(f"gw{i}"), tmp_path) for i in (1, 2)]
        members += gateways
        for g in gateways:
            g.wait_ready()
        scorers = [Member("scorer", hub_cfg(f"sc{i}"), tmp_path) for i in (1, 2, 3)]
        members += scorers
        for s in scorers:
            s.wait_ready()
        eps = [g.cfg.ingest.endpoint for g in gateways]
        for k in range(SENSORS):
            order = eps if k % 2 == 0 else eps[::-1]  # half start on each gateway
            with open(tmp_path / f"sensor{k}.log", "wb") as log:
                sensors.append(subprocess.Popen(
                    [sys.executable, str(SENSOR), ",".join(order), f"sensor-{k}",
                     str(tmp_path / f"sensor{k}"), "--total", str(PER_SENSOR), "--batch",
                     "250", "--rate", "5000", "--resend", "1", "--alert-every",
                     str(ALERT_EVERY), "--drain-timeout", "150"],
                    stdout=log, stderr=subprocess.STDOUT))
        # mid-stream: once the scorers have emitted a third of it (their status says)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and scored(scorers[0].cfg) < TOTAL // 3:
            time.sleep(0.3)
        assert all(p.poll() is None for p in sensors), "the stream ended before the kill"
        scorers[0].kill()
        gateways[0].kill()
        for i, p in enumerate(sensors):
            assert p.wait(200) == 0, (tmp_path / f"sensor{i}.log").read_text()[-2000:]
        time.sleep(3)  # the last transactions commit
        for m in members:
            m.stop()
        records = read_topic(broker.bootstrap, "threatseer.events", 12)
    finally:
        for p in sensors:
            if p.poll() is None:
                p.kill()
        for m in members:
            m.stop()
    ids: Counter[str] = Counter()
    delivered: Counter[str] = Counter()
    alerts = set()
    last: dict[int, tuple[int, int]] = {}
    for m in records:
        events = unpack(m.value())
        ids.update(ev["event.id"] for ev in events)
        pos = position(m.headers())
        assert pos is not None
        if m.partition() in last and pos <= last[m.partition()]:
            continue  # an aborted transaction's copy (see the module doc)
        last[m.partition()] = pos
        for ev in events:
            delivered[ev["event.id"]] += 1
            if ev.get("event.kind") == "alert":
                alerts.add(ev["event.id"])
    expected = {f"sensor-{k}:{i}" for k in range(SENSORS) for i in range(PER_SENSOR)}
    assert set(delivered) == expected, (len(expected - set(delivered)), "missing")
    assert max(delivered.values()) == 1, [e for e, n in delivered.items() if n > 1][:5]
    want_alerts = {f"sensor-{k}:{i}" for k in range(SENSORS)
                   for i in range(0, PER_SENSOR, ALERT_EVERY)}
    assert alerts == want_alerts
    aborted_copies = sum(ids.values()) - len(ids)
    logs = "".join((tmp_path / f"sensor{k}.log").read_text() for k in range(SENSORS))
    failovers = sum(int(x) for x in re.findall(r"failovers=(\d+)", logs))
    assert failovers >= 1, logs  # the sensors of the killed gateway moved to the other one
    print(f"\n{len(records)} records, {len(delivered)} events exactly once, {len(alerts)} "
          f"alerts, {failovers} sensor failovers; {aborted_copies} events of aborted transactions shown by the broker")
