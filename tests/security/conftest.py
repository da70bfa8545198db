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


@pytest.fixture
def procs():  # type: ignore[no-untyped-def]
    """Processes a test starts (HubProc, SensorProc, ...); every one still running is killed
    at the end, even when the test fails."""
    started: list = []
    yield started
    for p in started:
        p.kill()


@pytest.fixture
def zctx():  # type: ignore[no-untyped-def]
    import zmq

    ctx = zmq.Context()
    yield ctx
    ctx.destroy(linger=0)


@pytest.fixture
def start_hub(tmp_path):  # type: ignore[no-untyped-def]
    """In-process hubs on free ports, plaintext (as tests/hub's fixture of the same name);
    every hub it made is stopped at the end, even when the test fails."""
    from hub_helpers import hub_config

    from threatseer.hub.daemon import Hub

    hubs = []

    def make(start: bool = True, bundle_obj=None, **overrides):  # type: ignore[no-untyped-def]
        hub = Hub(hub_config(tmp_path, **overrides), bundle=bundle_obj, stop_timeout_s=5)
        hubs.append(hub)
        if start:
            hub.start()
        return hub

    yield make
    for hub in hubs:
        if not hub._stopped:
            hub.stop()
