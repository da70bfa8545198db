"""Which packages of an extra (``hub``) this install lacks.

``threatseer`` is installed without extras on sensor hosts; hub commands need the ``hub``
extra. The CLI uses this to say so in one line, and the Salt formula runs
``python -m threatseer.cli.extras hub`` to decide whether the extra must be installed.
"""

from __future__ import annotations

import re
import sys
from importlib import metadata


def requirements(extra: str) -> list[str]:
    """Names of the distributions ``threatseer[extra]`` adds."""
    marker = re.compile(rf"""extra\s*==\s*["']{re.escape(extra)}["']""")
    return [re.split(r"[\s<>=!~;\[(]", r, maxsplit=1)[0]
            for r in metadata.requires("threatseer") or () if marker.search(r)]


def missing(extra: str) -> list[str]:
    """The distributions of ``threatseer[extra]`` that are not installed."""
    out = []
    for name in requirements(extra):
        try:
            metadata.version(name)
        except metadata.PackageNotFoundError:
            out.append(name)
    return out


if __name__ == "__main__":
    extra = sys.argv[1] if len(sys.argv) > 1 else "hub"
    lacking = missing(extra)
    if lacking:
        print(f"threatseer[{extra}] lacks: {', '.join(lacking)}")
    sys.exit(1 if lacking else 0)
