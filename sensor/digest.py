"""Hash constructors that do not load OpenSSL.

``hashlib`` maps libcrypto for SHA-256: 3.5 MiB of the sensor's ~40 MiB RSS, for the hashes of
executables on first sight and two short ids. CPython's built-in SHA-256 and BLAKE2 need no
library. The price is speed on big files: ~240 MB/s against OpenSSL's ~1.2 GB/s here (4 ms per
MiB of a new executable, once per file version; hashing.py caches the result and caps the
size). Falls back to hashlib where the built-in modules are missing.

Files (executables) are hashed by :func:`file_sha256`: in C with the CPU's SHA instructions
where it has them (native/include/sha256_file.h: OpenSSL's speed, no library, no GIL), with
the built-in module elsewhere.
"""

from __future__ import annotations

from typing import Any

try:
    from threatseer.native._bpf import SHA256_HARDWARE, FileTooBig, sha256_file
except ImportError:  # pragma: no cover - a build without the native extension
    SHA256_HARDWARE = False

    class FileTooBig(Exception):  # type: ignore[no-redef]
        """The file grew past the size cap while it was read."""

try:  # CPython <= 3.11
    from _sha256 import sha256 as _sha256
except ImportError:  # pragma: no cover - 3.12+: _sha2
    try:
        from _sha2 import sha256 as _sha256  # type: ignore[no-redef]
    except ImportError:
        from hashlib import sha256 as _sha256  # type: ignore[assignment]

try:
    from _blake2 import blake2b as _blake2b
except ImportError:  # pragma: no cover
    from hashlib import blake2b as _blake2b  # type: ignore[assignment]


def sha256(data: bytes = b"") -> Any:
    return _sha256(data)


def blake2b(data: bytes = b"", *, digest_size: int = 64) -> Any:
    return _blake2b(data, digest_size=digest_size)


def file_sha256(path: str, max_bytes: int, chunk: int = 256 << 10) -> str:
    """The hex SHA-256 of the file at ``path``. OSError when it cannot be read,
    :class:`FileTooBig` when it holds more than ``max_bytes``."""
    if SHA256_HARDWARE:
        return sha256_file(path, max_bytes).hex()
    h = _sha256()
    buf = bytearray(chunk)
    view = memoryview(buf)
    total = 0
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buf):
            total += n
            if total > max_bytes:
                raise FileTooBig(path)
            h.update(view[:n])
    return h.hexdigest()
