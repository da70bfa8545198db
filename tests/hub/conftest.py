"""Fixtures of the hub tests; the helpers themselves are in hub_helpers.py."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import zmq

sys.path.insert(0, str(Path(__file__).resolve().parent))


@pytest.fixture
def zctx() -> Iterator[zmq.Context]:
    ctx = zmq.Context()
    yield ctx
    ctx.destroy(linger=0)


@pytest.fixture
def start_hub(tmp_path):  # type: ignore[no-untyped-def]
    """Factory of in-process hubs on free ports (``start_hub(start=False, bundle_obj=Bundle(...), ingest__x=...)``);
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
