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


# ---- parent descriptions kept per process, against ones rebuilt for every event ----------

def _fork(pid: int, ppid: int, second: int) -> dict:
    return {"event.action": "fork", "process.pid": pid, "process.parent.pid": ppid,
            "process.start": f"2026-01-01T00:00:{second:02d}.000000Z"}


def _exec(pid: int, ppid: int, exe: str, second: int) -> dict:
    return {"event.action": "exec", "process.pid": pid, "process.parent.pid": ppid,
            "process.name": exe.rsplit("/", 1)[-1], "process.executable": exe,
            "process.args": [exe, "-x"], "user.id": "0",
            "process.start": f"2026-01-01T00:00:{second:02d}.000000Z"}


def _both_ways(tmp_path, steps: list) -> list[dict]:
    """Run ``steps`` (events, or "expire": forget the graveyard) through an enricher that
    keeps parent descriptions and one that rebuilds them; they must agree. Returns the
    kept one's events."""
    import copy

    from threatseer.sensor.enrich import Enricher

    outs = []
    for reuse in (True, False):
        table = ProcessTable("host", proc_root=str(tmp_path), reuse=reuse)
        enricher = Enricher("s", "h", "host", proctable=table, host={})
        out = []
        for step in copy.deepcopy(steps):
            if step == "expire":
                table.expire(time.monotonic() + GRAVEYARD_S + 0.1)
            else:
                out.extend(enricher.enrich([step]))
        for ev in out:
            ev.pop("event.id")
        outs.append(out)
    assert outs[0] == outs[1]
    return outs[0]


def test_reused_parent_pid_renames_the_ancestor(tmp_path) -> None:
    out = _both_ways(tmp_path, [
        _exec(500, 1, "/usr/bin/old", 1), _fork(501, 500, 2), _exec(501, 500, "/usr/bin/kid", 2),
        _fork(502, 501, 3),  # 501's ancestors are read: [kid, old]
        {"event.action": "exit", "process.pid": 500},
        _fork(500, 1, 4), _exec(500, 1, "/usr/bin/new", 4),  # pid 500 again: another process
        _fork(503, 501, 5),
    ])
    assert out[3]["threatseer.ancestors"] == ["kid", "old"]
    assert out[-1]["threatseer.ancestors"] == ["kid", "new"]


def test_forgotten_ancestor_and_one_that_appears(tmp_path) -> None:
    out = _both_ways(tmp_path, [
        _exec(600, 700, "/usr/bin/kid", 1), _fork(601, 600, 2),  # 700 is unknown
        _fork(700, 1, 3), _exec(700, 1, "/usr/bin/late", 3), _fork(602, 600, 4),
        {"event.action": "exit", "process.pid": 700}, _fork(603, 600, 5),  # in the graveyard
        "expire", _fork(604, 600, 6),  # forgotten
    ])
    forks = [e["threatseer.ancestors"] for e in out if e["event.action"] == "fork"
             and e["process.parent.pid"] == 600]
    assert forks == [["kid"], ["kid", "late"], ["kid", "late"], ["kid"]]
