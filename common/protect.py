"""Processes a kill never touches, whoever asks: one list and one test for the hub (which
refuses to ask) and the sensor (which refuses to act, and tells its kernel program).

An entry is a process name (matched against ``process.name``, the kernel's 15-byte comm, and
the executable's basename) or an absolute executable path (exact, or every executable under
it when it ends with ``/``).
"""

from __future__ import annotations

# What keeps a host reachable and managed: init, remote access, configuration management,
# the container runtime, and threatseer itself (its console script's comm is "threatseer").
DEFAULT_PROTECTED_PROCESSES = [
    "init", "systemd", "sshd", "salt-minion", "salt-master", "salt-call", "threatseer",
    "dockerd", "containerd", "containerd-shim", "kubelet", "agetty", "login",
]


def protected_by(name: str, executable: str, protected: list[str] | tuple[str, ...]) -> str:
    """The entry of ``protected`` that covers a process, or ""."""
    base = executable.rsplit("/", 1)[-1] if executable else ""
    for entry in protected:
        if entry.startswith("/"):
            if executable == entry or (entry.endswith("/") and executable.startswith(entry)):
                return entry
        elif entry in (name, base) or (len(entry) > 15 and name and entry[:15] == name):
            return entry
    return ""


def check_protected_list(entries: list[str], key: str) -> None:
    """ValueError naming the first entry that cannot work."""
    for i, entry in enumerate(entries):
        if not isinstance(entry, str) or not entry.strip() or entry != entry.strip():
            raise ValueError(f"{key}[{i}]: a process name or an absolute executable path")
