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
    """The committed tree (HEAD), plus the kernel's vmlinux.h if already generated: the wheel
    is built from what is committed, never from other people's half-edited files, and the
    build never writes into the shared working tree."""
    dest.mkdir(parents=True)
    archive = subprocess.run(["git", "archive", "HEAD"], cwd=ROOT, capture_output=True,
                             check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    vmlinux = ROOT / "native" / "gen" / "vmlinux.h"
    if vmlinux.is_file():
        (dest / "native" / "gen").mkdir(parents=True, exist_ok=True)
        shutil.copy2(vmlinux, dest / "native" / "gen" / "vmlinux.h")


@pytest.fixture(scope="session")
def wheelhouse() -> Iterator[Path]:
    """A wheelhouse as an operator would serve it: the wheel of this checkout's HEAD and its
    dependencies' wheels (from pip's cache), so minions install with --no-index."""
    base = Path(tempfile.mkdtemp(prefix="ts-salt-wheels-"))
    src, wheels = base / "src", base / "wheels"
    _source_copy(src)
    # The BPF object first: setup.py builds it in build_ext, after build_py has collected the
    # package data, so a wheel from a clean tree would miss threatseer.bpf.o.
    proc = subprocess.run([sys.executable, "setup.py", "-q", "build_ext", "--inplace"],
                          cwd=src, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
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


