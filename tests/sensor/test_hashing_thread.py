"""Big executables are hashed off the reader's thread (sensor/hashing.py): the exec event
still carries its SHA-256 and the events after it keep their order, and the reader keeps
reading meanwhile. Real files, a real worker thread, and the real sensor."""

from __future__ import annotations

import hashlib
import os
import select
import shutil
import subprocess
import time
import uuid
from pathlib import Path

from threatseer.sensor.hashing import FIELD, PENDING, ExecutableHashes

from .conftest import action  # noqa: TID252


def big_program(where: Path, mib: int) -> Path:
    """/bin/true with ``mib`` MiB appended (still runs; a new file version to hash)."""
    exe = where / f"big-{uuid.uuid4().hex[:6]}"
    shutil.copyfile("/bin/true", exe)
    with open(exe, "ab") as f:
        f.write(os.urandom(1 << 20) * mib)
    exe.chmod(0o755)
    return exe


def test_a_big_file_is_hashed_by_the_worker_and_the_event_waits(tmp_path: Path) -> None:
    hashes = ExecutableHashes(inline_bytes=1 << 20, wait_s=30)
    exe = big_program(tmp_path, 8)
    small = tmp_path / "small"
    shutil.copyfile("/bin/true", small)
    ev: dict = {"process.executable": str(exe)}
    try:
        assert hashes.lookup(str(small), {}) == hashlib.sha256(small.read_bytes()).hexdigest()
        assert hashes.lookup(str(exe), ev) is PENDING
        again: dict = {}
        assert hashes.lookup(str(exe), again) is PENDING  # one job, two waiting events
        assert hashes.first_waiting(time.monotonic(), 1, 100) is ev
        assert select.select([hashes.fileno()], [], [], 30)[0]
        hashes.ready()
        deadline = time.monotonic() + 5
        while FIELD not in again and time.monotonic() < deadline:
            time.sleep(0.01)
        want = hashlib.sha256(exe.read_bytes()).hexdigest()
        assert ev[FIELD] == want and again[FIELD] == want
        assert hashes.first_waiting(time.monotonic(), 1, 100) is None
        assert hashes.lookup(str(exe), {}) == want  # cached now
    finally:
        hashes.close()


def test_an_event_that_waited_too_long_goes_without_its_digest(tmp_path: Path) -> None:
    hashes = ExecutableHashes(inline_bytes=1 << 20, wait_s=0.0)
    exe = big_program(tmp_path, 2)
    ev: dict = {}
    try:
        assert hashes.lookup(str(exe), ev) is PENDING
        assert hashes.first_waiting(time.monotonic() + 1, 1, 100) is None
        assert hashes.late == 1
    finally:
        hashes.close()


def test_the_sensor_sends_a_big_executables_exec_with_its_hash_in_order(start_sensor,
                                                                         tmp_path: Path) -> None:
    sensor = start_sensor()
    exe = big_program(tmp_path, 6)
    marker = f"after-{uuid.uuid4().hex[:8]}"
    subprocess.run([str(exe)], check=True)
    subprocess.run(["/bin/echo", marker], check=True, stdout=subprocess.DEVNULL)
    ex = sensor.wait_for(lambda e: action("exec")(e)
                         and e["process"].get("executable") == str(exe), timeout=20)
    assert ex["process"]["hash"]["sha256"] == hashlib.sha256(exe.read_bytes()).hexdigest()
    after = sensor.wait_for(lambda e: action("exec")(e)
                            and marker in (e["process"].get("args") or ()), timeout=20)
    assert after["event"]["sequence"] > ex["event"]["sequence"]
    seen = [e["event"]["sequence"] for e in sensor.events if "sequence" in e.get("event", {})]
    assert seen.index(ex["event"]["sequence"]) < seen.index(after["event"]["sequence"])
