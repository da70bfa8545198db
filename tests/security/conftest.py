"""Fixtures of the security tests: each test plays an attacker against a real hub, a real
sensor or the Salt formula (docs/security.md lists the boundary each one checks).

The helper modules of the other areas are shared: tests/hub, tests/transport and tests/salt
are put on sys.path so their helpers import as ``hub_helpers``, ``transport_helpers`` and
``salt_helpers``.
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
for area in ("hub", "transport", "salt"):
    path = str(HERE.parent / area)
    if path not in sys.path:
        sys.path.insert(0, path)
sys.path.insert(0, str(HERE))
