"""Who this sensor is: host name, host id and a stable sensor id."""

from __future__ import annotations

import socket
from pathlib import Path

from threatseer.sensor.digest import sha256

MACHINE_ID_FILES = ("/etc/machine-id", "/var/lib/dbus/machine-id")


def machine_id() -> str:
    """The host's machine id, or '' when the host has none."""
    for path in MACHINE_ID_FILES:
        try:
            value = Path(path).read_text().strip()
        except OSError:
            continue
        if value:
            return value
    return ""


def host_name() -> str:
    return socket.gethostname()


def sensor_id(configured: str = "") -> str:
    """The configured id, else one derived from the machine id (stable across restarts and
    reinstalls), else from the host name."""
    if configured:
        return configured
    seed = machine_id() or host_name()
    return "s-" + sha256(b"threatseer-sensor:" + seed.encode()).hexdigest()[:16]
