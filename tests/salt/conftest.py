"""The Salt test rig: one wheelhouse per session and a bundle-signing key.

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

from salt_helpers import ROOT, THREATSEER  # noqa: E402


def _source_copy(dest: Path) -> None:
    """Copy the checkout's source files (tracked and new, not ignored) plus the already-built
    BPF object, so building the wheel never writes into the shared working tree."""
    out = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT,
                         capture_output=True, check=True).stdout.decode()
    extra = ["native/threatseer.bpf.o"]
    extra += [str(p.relative_to(ROOT)) for p in (ROOT / "native" / "gen").glob("*")]
    for rel in [*filter(None, out.split("\0")), *extra]:
        src = ROOT / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)


@pytest.fixture(scope="session")
def wheelhouse() -> Iterator[Path]:
    """A wheelhouse as an operator would serve it: this checkout's wheel and its dependencies'
    wheels (from pip's cache), so minions install with --no-index."""
    base = Path(tempfile.mkdtemp(prefix="ts-salt-wheels-"))
    src, wheels = base / "src", base / "wheels"
    _source_copy(src)
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--disable-pip-version-check",
         "--no-build-isolation", "-w", str(wheels), str(src)],
        capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert list(wheels.glob("threatseer-*.whl")), list(wheels.iterdir())
    shutil.rmtree(src)
    try:
        yield wheels
    finally:
        shutil.rmtree(base, ignore_errors=True)


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


