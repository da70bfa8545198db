"""The layers of docs/architecture.md hold, and the check would catch a reversed import."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from layering import PACKAGES, ROOT, violations


def test_the_repository_keeps_its_layers() -> None:
    assert violations() == []


def test_a_reversed_import_fails_the_check(tmp_path: Path) -> None:
    for pkg in PACKAGES:
        shutil.copytree(ROOT / pkg, tmp_path / pkg, ignore=shutil.ignore_patterns("*.so", "*.c"))
    assert violations(tmp_path) == []
    # a lazy import, an import string and a cimport, each one layer the wrong way
    with open(tmp_path / "native" / "probe.py", "a") as f:
        f.write("\n\ndef _late():\n    from threatseer.hub import scoring\n    return scoring\n")
    with open(tmp_path / "sensor" / "daemon.py", "a") as f:
        f.write('\nPLUGIN = "threatseer.hub.cli:hub_command"\n')
    with open(tmp_path / "hub" / "_batch.pyx", "a") as f:
        f.write("\nfrom threatseer.sensor.enrich import Enricher\n")
    bad = violations(tmp_path)
    assert any(b.startswith("native/probe.py:") and "imports threatseer.hub" in b for b in bad)
    assert any(b.startswith("sensor/daemon.py:") and "imports threatseer.hub" in b for b in bad)
    assert any(b.startswith("hub/_batch.pyx:") and "imports threatseer.sensor" in b for b in bad)
    assert len(bad) == 3, bad
    # the command CI runs fails on it
    proc = subprocess.run([sys.executable, str(ROOT / "tests" / "layering.py"), str(tmp_path)],
                          capture_output=True, text=True)
    assert proc.returncode == 1 and "native/probe.py" in proc.stdout
