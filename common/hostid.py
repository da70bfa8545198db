"""The host's machine id: the sensor names its host by it (``host.id``), and the hub compares
it with an event's to know whether a process it is asked to kill is its own."""

from __future__ import annotations

from pathlib import Path

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
