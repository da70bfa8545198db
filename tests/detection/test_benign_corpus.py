"""Everyday fleet work, run for real: every workload must succeed and raise no alert.

(The alerts-per-10k-events figure over the whole benign corpus is bench/detection_bench.py's.)"""

from __future__ import annotations

import pytest
from corpus import benign

WORKLOADS = benign()


@pytest.mark.parametrize("workload", WORKLOADS, ids=lambda w: w.id)
def test_benign_workload_is_quiet(detection, workload) -> None:
    outcome = detection.run(workload.script, workload.infra, workload.timeout)
    assert outcome.run.returncode == 0 and not outcome.run.timed_out, (
        f"{workload.id} failed (rc {outcome.run.returncode}):\n{outcome.run.output[-2000:]}")
    assert len(outcome.events) >= 5, outcome.summary()
    assert not outcome.alerts, f"{workload.id} alerted:\n{outcome.summary()}"
