"""Fixtures of the transport tests; the helpers themselves are in transport_helpers.py."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))


@pytest.fixture
def procs():  # type: ignore[no-untyped-def]
    """Processes a test starts; every one still running is SIGKILLed at the end."""
    started: list = []
    yield started
    for p in started:
        p.kill()
