"""Native core: libbpf loader and ring-buffer reader (Cython) under a plain Python API, and
the hub's hot loops (``_batch``, ``_static``, ``_rule_index``, ``_profile``).

``Probe`` and ``ProbeError`` are imported on first use, so that the hub, which only needs
its loops, does not load libbpf.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Probe", "ProbeError"]


def __getattr__(name: str) -> Any:
    if name == "Probe":
        from threatseer.native.probe import Probe

        return Probe
    if name == "ProbeError":
        from threatseer.native.errors import ProbeError

        return ProbeError
    raise AttributeError(f"module 'threatseer.native' has no attribute {name!r}")
