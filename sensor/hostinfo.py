"""Who this sensor is: host name, host id, a stable sensor id, and the host's ECS details
(architecture, addresses, operating system)."""

from __future__ import annotations

import ipaddress
import os
import socket
from pathlib import Path

from threatseer.common.hostid import MACHINE_ID_FILES, machine_id
from threatseer.sensor.digest import sha256

__all__ = ["MACHINE_ID_FILES", "addresses", "host_details", "host_name", "machine_id", "os_release",
           "sensor_id"]


def host_name() -> str:
    return socket.gethostname()


def sensor_id(configured: str = "") -> str:
    """The configured id, else one derived from the machine id (stable across restarts and
    reinstalls), else from the host name."""
    if configured:
        return configured
    seed = machine_id() or host_name()
    return "s-" + sha256(b"threatseer-sensor:" + seed.encode()).hexdigest()[:16]


def os_release(path: str = "/etc/os-release") -> dict[str, str]:
    """os-release(5) as a dict (unquoted values); empty when the file is missing."""
    out: dict[str, str] = {}
    try:
        text = Path(path).read_text(errors="replace")
    except OSError:
        return out
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip() and not key.startswith("#"):
            out[key.strip()] = value.strip().strip("\"'")
    return out


def addresses(proc_net: str = "/proc/net") -> list[str]:
    """The host's IPv4 and IPv6 addresses, loopback and link-local left out, from the kernel's
    tables (fib_trie's local routes, if_inet6): no extra library, no subprocess."""
    found: list[str] = []
    try:
        lines = Path(proc_net, "fib_trie").read_text().splitlines()
    except OSError:
        lines = []
    for prev, line in zip(lines, lines[1:], strict=False):
        if "/32 host LOCAL" in line:
            ip = prev.split()[-1]
            if not ip.startswith(("127.", "169.254.")) and ip not in found:
                found.append(ip)
    try:
        rows = Path(proc_net, "if_inet6").read_text().splitlines()
    except OSError:
        rows = []
    for row in rows:
        cols = row.split()
        if len(cols) < 6:
            continue
        raw = cols[0]
        try:
            ip = str(ipaddress.IPv6Address(int(raw, 16)))
        except ValueError:
            continue
        addr = ipaddress.IPv6Address(ip)
        if not (addr.is_loopback or addr.is_link_local) and ip not in found:
            found.append(ip)
    return found


def host_details() -> dict[str, object]:
    """ECS host.* fields beyond name and id: architecture, addresses, operating system."""
    uname = os.uname()
    rel = os_release()
    details: dict[str, object] = {
        "host.architecture": uname.machine,
        "host.os.type": "linux",
        "host.os.kernel": uname.release,
    }
    ips = addresses()
    if ips:
        details["host.ip"] = ips
    for field, key in (("host.os.name", "NAME"), ("host.os.version", "VERSION_ID"),
                       ("host.os.platform", "ID"), ("host.os.full", "PRETTY_NAME")):
        if rel.get(key):
            details[field] = rel[key]
    family = (rel.get("ID_LIKE") or rel.get("ID") or "").split()
    if family:
        details["host.os.family"] = family[0]
    return details
