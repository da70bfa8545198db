"""Fixtures of the security tests: each test plays an attacker against a real hub, a real
sensor or the Salt formula (docs/security.md lists the boundary each one checks).

The helper modules of the other areas are shared: tests/hub, tests/transport, tests/salt and
tests/cluster are put on sys.path so their helpers import as ``hub_helpers``,
``transport_helpers``, ``salt_helpers`` and ``cluster_helpers``.
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
for area in ("hub", "transport", "salt", "cluster"):
    path = str(HERE.parent / area)
    if path not in sys.path:
        sys.path.insert(0, path)
sys.path.insert(0, str(HERE))


import pytest  # noqa: E402
from hub_helpers import start_hub, zctx  # noqa: E402

__all__ = ["procs", "start_hub", "zctx"]


@pytest.fixture
def procs():  # type: ignore[no-untyped-def]
    """Processes a test starts (HubProc, SensorProc, ...); every one still running is killed
    at the end, even when the test fails."""
    started: list = []
    yield started
    for p in started:
        p.kill()
