"""Who this sensor is: host name, host id and a stable sensor id."""

from __future__ import annotations

import socket

from threatseer.common.hostid import MACHINE_ID_FILES, machine_id
from threatseer.sensor.digest import sha256

__all__ = ["MACHINE_ID_FILES", "host_name", "machine_id", "sensor_id"]


def host_name() -> str:
    return socket.gethostname()


def sensor_id(configured: str = "") -> str:
    """The configured id, else one derived from the machine id (stable across restarts and
    reinstalls), else from the host name."""
    if configured:
        return configured
    seed = machine_id() or host_name()
    return "s-" + sha256(b"threatseer-sensor:" + seed.encode()).hexdigest()[:16]
