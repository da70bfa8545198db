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
from pathlib import Path
from typing import Any

from cluster_helpers import SENSOR, EventsTally, Member, wait_for

from threatseer.hub.cluster.status import read_status

SENSORS, PER_SENSOR, ALERT_EVERY = 4, 50_000, 997
TOTAL = SENSORS * PER_SENSOR
BATCH = 250


def status_sum(cfg: Any, role: str, key: str) -> int:
    docs = read_status(cfg.cluster, timeout=1.0)
    return sum(d.get(key, 0) for d in docs.values() if d.get("role") == role)


def _unsigned_ok(cfg: Any) -> Any:
    """The repository's default bundle (its rules make the alerts) is unsigned: allowed here."""
    cfg.admin.allow_unsigned = True
    return cfg


def test_kill9_scorer_and_gateway_mid_stream_every_event_once(tmp_path: Path, broker: Any,
                                                               hub_cfg: Any) -> None:
    members: list[Member] = []
    sensors: list[subprocess.Popen[bytes]] = []
    expected = {f"sensor-{k}:{i}" for k in range(SENSORS) for i in range(PER_SENSOR)}
    tally = EventsTally(broker.bootstrap, "threatseer.events", 12)
    try:
        gateways = [Member("gateway", hub_cfg(f"gw{i}"), tmp_path) for i in (1, 2)]
        scorers = [Member("scorer", _unsigned_ok(hub_cfg(f"sc{i}")), tmp_path)
                   for i in (1, 2, 3)]
        members += gateways + scorers
        for m in members:  # started together, waited for together
            m.wait_ready()
        eps = [g.cfg.ingest.endpoint for g in gateways]
        for k in range(SENSORS):
            order = eps if k % 2 == 0 else eps[::-1]  # half start on each gateway
            with open(tmp_path / f"sensor{k}.log", "wb") as log:
                sensors.append(subprocess.Popen(
                    [sys.executable, str(SENSOR), ",".join(order), f"sensor-{k}",
                     str(tmp_path / f"sensor{k}"), "--total", str(PER_SENSOR), "--batch",
                     str(BATCH), "--rate", "5000", "--resend", "1", "--alert-every",
                     str(ALERT_EVERY), "--drain-timeout", "240"],
                    stdout=log, stderr=subprocess.STDOUT))
        # mid-stream for the gateways: a third of the batches stored (their status says)
        wait_for(lambda: status_sum(gateways[0].cfg, "gateway", "produced")
                 >= TOTAL // BATCH // 3, 120, "a third of the batches in Kafka", 0.2)
        assert all(p.poll() is None for p in sensors), "the stream ended before the kill"
        gateways[0].kill()
        # mid-stream for the scorers: a third of the events committed to the events topic
        assert tally.until(lambda t: len(t.delivered) >= TOTAL // 3, 180), \
            f"{len(tally.delivered)} events scored in 180 s"
        scorers[0].kill()
        for i, p in enumerate(sensors):
            assert p.wait(300) == 0, (tmp_path / f"sensor{i}.log").read_text()[-2000:]
        # the sensors are done when Kafka holds every batch; wait until all are scored
        tally.until(lambda t: expected <= t.delivered.keys(), 240)
        for m in members:
            m.stop()
        tally.drain()  # whatever the graceful stops committed last
    finally:
        for p in sensors:
            if p.poll() is None:
                p.kill()
        for m in members:
            m.stop()
        tally.close()
    # a fresh reader of the whole topic, after every writer stopped
    final = EventsTally(broker.bootstrap, "threatseer.events", 12)
    try:
        final.drain()
    finally:
        final.close()
    delivered = final.delivered
    missing = expected - delivered.keys()
    assert not missing, (len(missing), "missing", sorted(missing)[:5])
    assert delivered.keys() == expected
    assert max(delivered.values()) == 1, [e for e, n in delivered.items() if n > 1][:5]
    alerts = {ev["event.id"] for m in final.records for ev in _events(m)
              if ev.get("event.kind") == "alert"}
    want_alerts = {f"sensor-{k}:{i}" for k in range(SENSORS)
                   for i in range(0, PER_SENSOR, ALERT_EVERY)}
    assert alerts == want_alerts
    aborted_copies = sum(final.all_ids.values()) - len(final.all_ids)
    logs = "".join((tmp_path / f"sensor{k}.log").read_text() for k in range(SENSORS))
    failovers = sum(int(x) for x in re.findall(r"failovers=(\d+)", logs))
    assert failovers >= 1, logs  # the sensors of the killed gateway moved to the other one
    print(f"\n{len(final.records)} records, {len(delivered)} events exactly once, "
          f"{len(alerts)} alerts, {failovers} sensor failovers; {aborted_copies} events of "
          f"aborted transactions shown by the broker ({final.copies} records skipped)")


def _events(m: Any) -> list[dict[str, Any]]:
    from cluster_helpers import unpack

    return unpack(m.value())
