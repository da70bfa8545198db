"""Fixtures shared by every test area (each area keeps its own in tests/<area>/conftest.py)."""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # tests/layering.py, shared with `make lint`


def pytest_sessionstart(session: pytest.Session) -> None:
    """Refuse to test a stale native build: an edited ``native/*.pyx`` whose extension was not
    rebuilt would be tested as it was before the edit."""
    stale = []
    for pyx in sorted([*(ROOT / "native").glob("*.pyx"), *(ROOT / "hub").rglob("*.pyx")]):
        built = list(pyx.parent.glob(pyx.stem + ".*.so"))
        if not built or max(p.stat().st_mtime for p in built) < pyx.stat().st_mtime:
            stale.append(pyx.name)
    if stale:
        pytest.exit(f"native extensions missing or older than their source ({', '.join(stale)})"
                    ": run `make build` first", returncode=2)


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def port() -> int:
    return free_port()


@pytest.fixture(scope="session")
def threatseer_cmd() -> list[str]:
    """How to run the CLI from tests: the venv's console script via this interpreter."""
    return [os.path.join(os.path.dirname(sys.executable), "threatseer")]
