"""Item 6: one huge message cannot make the hub allocate it.

The old hub received a 512 MiB message whole (58 -> 570 MB) before refusing it. ZeroMQ's
MAXMSGSIZE, set from ``ingest.max_message_bytes``, drops the connection as soon as a frame's
length is read. A real hub process; its peak RSS (VmHWM) is read from /proc.
"""

from __future__ import annotations

from pathlib import Path

from security_helpers import WireSensor, exec_event
from transport_helpers import HubProc, Keys, hub_cfg, wait_for


def _peak_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


def test_a_huge_message_is_cut_off_at_the_socket(tmp_path, procs) -> None:
    keys = Keys(tmp_path / "keys")
    cfg = hub_cfg(tmp_path, keys)
    cfg["ingest"]["max_message_bytes"] = 1 << 20
    hub = HubProc(tmp_path, cfg).start()
    procs.append(hub)
    ep = cfg["ingest"]["endpoint"]
    sensor = WireSensor(ep, "sensor", keys.sensor[0], keys.hub[1])
    try:
        assert sensor.wait_ack(sensor.send([exec_event("sensor", 0)]), 15)
        before = _peak_kib(hub.proc.pid)
        frames = [b"\x80", b"\x00" * (128 << 20)]  # 128 MiB: any frame past the cap
        sensor.send_frames(frames)
        del frames
        # the connection is dropped and comes back; the sensor goes on
        assert sensor.wait_ack(sensor.send([exec_event("sensor", 1)]), 15)
        after = _peak_kib(hub.proc.pid)
    finally:
        sensor.close()
    assert after - before < 32 << 10, (before, after)  # the old hub: +128 MiB
    wait_for(lambda: hub.status()["sensors"].get("sensor", {}).get("events_in") == 2, 10,
             "both good batches scored")
    assert hub.stop() == 0
