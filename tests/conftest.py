"""Fixtures shared by every test area (each area keeps its own in tests/<area>/conftest.py)."""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def port() -> int:
    return free_port()


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    return SHARED


@pytest.fixture(scope="session")
def threatseer_cmd() -> list[str]:
    """How to run the CLI from tests: the venv's console script via this interpreter."""
    return [os.path.join(os.path.dirname(sys.executable), "threatseer")]
