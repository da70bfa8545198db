"""The ``console:`` section of the hub's config (also read by ``threatseer console``)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

DEFAULT_HOST = "127.0.0.1"


def split_listen(listen: str) -> tuple[str, int]:
    """``(host, port)`` of a ``host:port``, ``:port`` or bare ``port`` (host 127.0.0.1);
    ValueError when it is none of these."""
    host, sep, port = listen.rpartition(":")
    if not sep:
        host, port = "", listen
    host = host.strip("[]") or DEFAULT_HOST
    if not port.isdigit() or not 0 <= int(port) < 65536:
        raise ValueError("listen: must be host:port or a port, e.g. 127.0.0.1:9180")
    return host, int(port)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass
class ConsoleConfig:
    # host:port of the web console served by the hub (a bare port means 127.0.0.1); empty
    # disables it. A non-loopback address needs tls_cert_file and tls_key_file.
    listen: str = ""
    # Viewer tokens (read-only role): a file, or a directory of files, of token hashes as
    # `threatseer keys gen --type console` writes them to OUTPUT.pub ("sha256:HEX  # name"),
    # one a line; re-read when it changes, no restart.
    viewer_tokens: str = ""
    # Admin tokens, same format: everything a viewer may, plus profile reset and relearn.
    admin_tokens: str = ""
    # PEM certificate chain and key for HTTPS; both empty: plain HTTP (loopback only).
    tls_cert_file: str = ""
    tls_key_file: str = ""
    # Alerts (and scored events) held in memory for the live view and the detail pages.
    alerts_kept: int = 10_000
    # Seconds of process activity kept to draw the tree behind an alert ...
    tree_window_s: float = 900.0
    # ... for at most this many processes (the least recently active are forgotten first) ...
    tree_max_processes: int = 50_000
    # ... and this many events (exec, fork, file, network, ...) per process.
    tree_events_per_process: int = 24

    def validate(self) -> None:
        if self.listen:
            host, _port = split_listen(self.listen)
            if not is_loopback(host) and not (self.tls_cert_file and self.tls_key_file):
                raise ValueError(f"listen: {host} is not a loopback address: set tls_cert_file "
                                 "and tls_key_file (tokens must not cross a network in clear)")
            if not (self.viewer_tokens or self.admin_tokens):
                raise ValueError("viewer_tokens: the console needs viewer_tokens or "
                                 "admin_tokens (make one with `threatseer keys gen --type "
                                 "console`)")
        if bool(self.tls_cert_file) != bool(self.tls_key_file):
            raise ValueError("tls_cert_file: tls_cert_file and tls_key_file go together")
        if self.alerts_kept < 100:
            raise ValueError("alerts_kept: must be at least 100")
        if self.tree_window_s <= 0:
            raise ValueError("tree_window_s: must be positive")
        if self.tree_max_processes < 100:
            raise ValueError("tree_max_processes: must be at least 100")
        if not 1 <= self.tree_events_per_process <= 1000:
            raise ValueError("tree_events_per_process: must be between 1 and 1000")
