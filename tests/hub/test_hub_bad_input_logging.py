"""Bad input is logged at most once per sensor and reason per interval, with a count of the
lines held back, so a broken sensor cannot flood the hub's log."""

from __future__ import annotations

import logging
import time

from hub_helpers import Sender, Subscriber, base, exec_event, wait_connected


def test_bad_input_logging_is_rate_limited_per_sensor_and_reason(start_hub, zctx, caplog) -> None:
    caplog.set_level(logging.WARNING, logger="threatseer.hub.ingest")
    # a's batches are all bad: without penalty_strikes 0 it would be boxed after 20 of them
    # (tests/security/test_flood.py), and this test is about the log lines
    hub = start_hub(ingest__log_interval_s=0.5, ingest__penalty_strikes=0)
    sub = Subscriber(zctx, hub.publisher.endpoint)
    a, b = Sender(zctx, hub.ingest.endpoint, "a"), Sender(zctx, hub.ingest.endpoint, "b")
    wait_connected(a, sub)
    for _ in range(50):
        a.send([base("exec")])  # missing fields
        b.send([base("open"), exec_event()])
    assert len(sub.collect(50)) == 50  # b's good events all delivered
    assert hub.ingest.sensors["a"].bad == {"schema": 50}
    assert hub.ingest.sensors["b"].bad == {"schema": 50}
    lines = [r.getMessage() for r in caplog.records if "schema" in r.getMessage()]
    # one line per sensor within the interval (the run takes well under 0.5 s) ...
    assert sum("sensor a:" in m for m in lines) <= 2
    assert sum("sensor b:" in m for m in lines) <= 2
    assert any("missing process.executable, process.args, process.parent.pid" in m for m in lines)
    # ... and the next line reports how many were held back
    caplog.clear()
    time.sleep(0.6)
    a.send([base("exec")])
    sub.drain(0.3)
    (line,) = [r.getMessage() for r in caplog.records if "sensor a:" in r.getMessage()]
    assert "more since last report" in line
