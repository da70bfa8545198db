"""The one exception the native core raises."""

from __future__ import annotations


class ProbeError(OSError):
    """Loading, attaching or reading the BPF probe failed.

    An OSError so callers get ``.errno`` (e.g. EPERM: not root / no CAP_BPF, ENOENT:
    tracefs not mounted); ``str()`` says what failed and, for load failures, carries the
    tail of the verifier log.
    """

    def __init__(self, errno: int, message: str) -> None:
        super().__init__(errno, message)
        self.message = message

    def __str__(self) -> str:
        return f"[Errno {self.errno}] {self.message}"
