"""The Salt test rig: a bundle-signing key (the wheelhouse is tests/conftest.py's).

Every daemon gets its own config dir and ``root_dir`` under a temp dir; the formula writes
into a per-minion test root (pillar ``threatseer:root``), so nothing lands under /etc.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from salt_helpers import THREATSEER  # noqa: E402


@pytest.fixture(scope="session")
def signing_key() -> Iterator[Path]:
    """An ed25519 bundle-signing key pair (secret at the path, public at path.pub)."""
    base = Path(tempfile.mkdtemp(prefix="ts-salt-signing-"))
    key = base / "signing.key"
    subprocess.run([THREATSEER, "keys", "gen", "--type", "signing", "-o", str(key)],
                   check=True, capture_output=True)
    try:
        yield key
    finally:
        shutil.rmtree(base, ignore_errors=True)


