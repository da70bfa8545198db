"""SHA-256 with the CPU's SHA instructions (native/include/sha256_file.h), which the sensor
uses for executables' hashes: the same digests as hashlib (OpenSSL) for every length around
the block and buffer boundaries, files included, and the errors the hashing code relies on."""

from __future__ import annotations

import hashlib
import random
from pathlib import Path

import pytest

from threatseer.native import _bpf
from threatseer.sensor import digest

hardware = pytest.mark.skipif(not _bpf.SHA256_HARDWARE,
                              reason="this CPU has no SHA instructions (the built-in module "
                              "is used: test_fallback_gives_the_same_digests)")
CHUNK = 256 << 10  # the C reader's buffer
LENGTHS = [*range(0, 130), 1000, 4095, 4096, CHUNK - 1, CHUNK, CHUNK + 1, CHUNK + 63,
           3 * CHUNK + 17, 5_000_001]


@hardware
def test_digests_match_hashlib_in_memory_and_in_files(tmp_path: Path) -> None:
    rnd = random.Random(20)
    f = tmp_path / "f"
    for n in LENGTHS:
        data = rnd.randbytes(n)
        assert _bpf.sha256_bytes(data) == hashlib.sha256(data).digest(), n
        if n in (0, 1, 55, 56, 63, 64, 65) or n >= 1000:
            f.write_bytes(data)
            assert _bpf.sha256_file(str(f), 1 << 30) == hashlib.sha256(data).digest(), n


@hardware
def test_size_cap_and_unreadable_files(tmp_path: Path) -> None:
    f = tmp_path / "f"
    f.write_bytes(b"x" * (CHUNK + 1))
    with pytest.raises(_bpf.FileTooBig):
        _bpf.sha256_file(str(f), CHUNK)
    assert _bpf.sha256_file(str(f), CHUNK + 1) == hashlib.sha256(f.read_bytes()).digest()
    with pytest.raises(FileNotFoundError):
        _bpf.sha256_file(str(tmp_path / "gone"), 1 << 20)
    with pytest.raises(IsADirectoryError):
        _bpf.sha256_file(str(tmp_path), 1 << 20)


def test_fallback_gives_the_same_digests(tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Where the CPU has no SHA instructions, file_sha256 reads with CPython's module."""
    f = tmp_path / "f"
    data = random.Random(7).randbytes(3 * CHUNK + 5)
    f.write_bytes(data)
    want = hashlib.sha256(data).hexdigest()
    assert digest.file_sha256(str(f), 1 << 30) == want
    monkeypatch.setattr(digest, "SHA256_HARDWARE", False)
    assert digest.file_sha256(str(f), 1 << 30, chunk=4096) == want
    with pytest.raises(digest.FileTooBig):
        digest.file_sha256(str(f), len(data) - 1)
