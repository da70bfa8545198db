"""Fixtures shared by every test area (each area keeps its own in tests/<area>/conftest.py)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # tests/layering.py, shared with `make lint`
sys.path.insert(0, str(ROOT))  # `from tests.conftest import ...` under any pytest launcher


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


def stop_processes(*procs: subprocess.Popen, timeout: float = 20.0) -> None:
    """SIGTERM every process still running, give each ``timeout`` seconds to exit (they stop
    in parallel), then SIGKILL what is left: a test's daemons never outlive it."""
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


@pytest.fixture
def port() -> int:
    return free_port()


@pytest.fixture(scope="session")
def threatseer_cmd() -> list[str]:
    """How to run the CLI from tests: the venv's console script via this interpreter."""
    return [os.path.join(os.path.dirname(sys.executable), "threatseer")]


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
         "--no-build-isolation", "-w", str(wheels), f"{src}[hub]"],
        capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert list(wheels.glob("threatseer-*.whl")), list(wheels.iterdir())
    shutil.rmtree(src)
    try:
        yield wheels
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def tracefs_unmounted() -> Iterator[None]:
    """tracefs unmounted, as on a fresh machine; mounted again afterwards whatever happens
    (a probe that finds it missing mounts it itself, so other users of the machine manage)."""
    target = "/sys/kernel/tracing"
    if os.geteuid() != 0:
        pytest.skip("unmounting tracefs needs root")
    for _ in range(50):
        if subprocess.run(["mountpoint", "-q", target]).returncode != 0:
            break
        subprocess.run(["umount", target], capture_output=True)
        time.sleep(0.1)
    assert subprocess.run(["mountpoint", "-q", target]).returncode != 0, "tracefs stays mounted"
    try:
        yield
    finally:
        if subprocess.run(["mountpoint", "-q", target]).returncode != 0:
            subprocess.run(["mount", "-t", "tracefs", "nodev", target], check=False)
