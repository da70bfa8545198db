"""Exited processes are remembered briefly (late events still name them), then forgotten: a
burst of execs must not stay in the sensor's memory."""

from __future__ import annotations

import hashlib
import time

from threatseer.sensor import digest
from threatseer.sensor.proctable import GRAVEYARD_S, ProcessTable


def test_exited_process_named_until_it_expires(tmp_path) -> None:
    table = ProcessTable("host", proc_root=str(tmp_path))  # an empty /proc: nothing to re-read
    table.on_exec(4242, 1, "worker", "/usr/bin/worker", ["worker", "-v"],
                  "2026-01-01T00:00:05.000000Z")
    table.on_exit(4242)
    assert 4242 not in table.procs
    assert table.get(4242).executable == "/usr/bin/worker"  # a late event still names it
    assert table.ancestors(4242) == ["worker"]
    assert table.expire(time.monotonic()) == 0
    assert table.expire(time.monotonic() + GRAVEYARD_S + 0.1) == 1
    assert table.exited == 0
    assert table.get(4242) is None


def test_graveyard_bounded_by_count(tmp_path) -> None:
    table = ProcessTable("host", proc_root=str(tmp_path), graveyard=3)
    for pid in range(100, 110):
        table.on_fork(pid, 1, "2026-01-01T00:00:01.000000Z")
        table.on_exit(pid)
    assert table.exited == 3
    assert [table.get(p) is not None for p in (106, 107, 108, 109)] == [False, True, True, True]


def test_builtin_digests_match_hashlib() -> None:
    data = b"threatseer" * 1000
    assert digest.sha256(data).hexdigest() == hashlib.sha256(data).hexdigest()
    assert (digest.blake2b(data, digest_size=12).hexdigest()
            == hashlib.blake2b(data, digest_size=12).hexdigest())


def test_sensor_imports_stay_lean() -> None:
    """Modules that cost the sensor RSS for nothing it needs (libcrypto ~3.5 MiB, asyncio ~9, ctypes 0.4,
    tempfile and friends ~0.8) stay out of its process."""
    import subprocess
    import sys

    code = ("import sys, threatseer.sensor.daemon, threatseer.sensor.ship, threatseer.native.probe;"
            "print(' '.join(m for m in ('_hashlib', 'asyncio', 'tempfile', 'ctypes') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
