"""Fixtures of the cluster tests: a real Kafka-protocol broker (tansu, as the output tests run
it) and hub configs for the cluster roles."""

from __future__ import annotations

import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cluster_helpers import Server, free_port, tansu_at  # noqa: E402


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Server]:
    server = tansu_at(free_port(), tmp_path).start()
    try:
        yield server
    finally:
        server.stop(signal.SIGKILL)


@pytest.fixture
def hub_cfg(tmp_path: Path, broker: Any) -> Any:
    """Factory: a HubConfig for one cluster member named ``name``."""
    from cluster_helpers import member_config

    return lambda name, **kw: member_config(tmp_path, broker.bootstrap, name, **kw)
