"""The sensor's reader loop wakes about once per batch under a steady stream.

Every wakeup from a sleep costs the sensor ~0.1-0.3 ms of CPU (cold caches), more than the
hundred events of a batch at 1,000 events/s: its CPU budget there is mostly wakeups. Under a
steady stream the loop waits for a send credit (sensor/pacing.py); the records the kernel held
meanwhile go when the credit is back, in that same wakeup (they used to wait GATHER_S more: a
second wakeup per batch). The hub socket here never acknowledges, so acks wake nothing.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time

import pytest
import yaml
import zmq

from threatseer.common import wire

RATE = 1000  # events/s: the pacing's longest hold (sensor/pacing.py FULL_HOLD_RATE)


def voluntary_switches(pid: int) -> int:
    """The main thread's sleeps so far (each one ends in a wakeup)."""
    status = open(f"/proc/{pid}/task/{pid}/status").read()  # noqa: SIM115
    return int(status.split("voluntary_ctxt_switches:")[1].split()[0])


def test_a_steady_stream_costs_one_wakeup_per_batch(threatseer_cmd, tmp_path, port):
    if os.geteuid() != 0:
        pytest.skip("the sensor needs root for eBPF")
    watched = tmp_path / "watched-file"
    watched.write_text("x")
    router = zmq.Context.instance().socket(zmq.ROUTER)
    router.bind(f"tcp://127.0.0.1:{port}")
    cfg = tmp_path / "sensor.yaml"
    cfg.write_text(yaml.safe_dump({
        "hub": f"tcp://127.0.0.1:{port}", "plaintext": True, "batch_latency_ms": 100,
        "health_interval_s": 600.0, "sensitive_paths": [str(watched)],
        "resend_after_s": 60.0, "state_dir": str(tmp_path / "state")}))
    proc = subprocess.Popen([*threatseer_cmd, "sensor", "-c", str(cfg)],
                            stderr=subprocess.PIPE, text=True)
    stop = threading.Event()

    def opens() -> None:  # RATE opens a second, in bursts of 10 every 10 ms
        next_at = time.monotonic()
        while not stop.is_set():
            for _ in range(10):
                os.close(os.open(watched, os.O_RDONLY))
            next_at += 10 / RATE
            time.sleep(max(0.0, next_at - time.monotonic()))

    opener = threading.Thread(target=opens, daemon=True)
    try:
        assert router.poll(60_000), "no batch from the sensor"  # attached: its first health
        opener.start()
        time.sleep(1.0)  # the pacer's rate estimate settles on the stream
        # A busy host only adds wakeups (GIL hand-offs to the hashing thread for another
        # process's new executables, CPU starvation): the best of a few windows.
        best = None
        for _ in range(3):
            while router.poll(0):
                router.recv_multipart()
            woke0, t0 = voluntary_switches(proc.pid), time.monotonic()
            batches = events = 0
            while time.monotonic() - t0 < 2.0:
                if router.poll(100):
                    batch = wire.decode(router.recv_multipart()[1:])
                    batches += 1
                    events += len(batch.events)
            wakeups = voluntary_switches(proc.pid) - woke0
            if best is None or wakeups / max(batches, 1) < best[0] / max(best[1], 1):
                best = (wakeups, batches, events)
            if events >= RATE and wakeups <= 1.5 * batches:
                break
    finally:
        stop.set()
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(20)
        router.close(0)
        opener.join(5) if opener.is_alive() else None
    assert rc == 0, proc.stderr.read()
    wakeups, batches, events = best
    # the stream got through, coalesced (~10 batches a second at the whole hold; more where
    # the rate estimate wanders on a busy host, still paced by credits)
    assert events >= RATE, best
    assert 6 <= batches <= 80, best
    # one wakeup per batch (its credit), a few extra (ZeroMQ, the hashing thread)
    assert wakeups <= 1.5 * batches, best
