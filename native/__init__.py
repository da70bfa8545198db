"""Native core: libbpf loader and ring-buffer reader (Cython) under a plain Python API."""

from threatseer.native.errors import ProbeError
from threatseer.native.probe import Probe

__all__ = ["Probe", "ProbeError"]
