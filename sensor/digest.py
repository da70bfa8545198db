"""Hash constructors that do not load OpenSSL.

``hashlib`` maps libcrypto for SHA-256: 3.5 MiB of the sensor's ~40 MiB RSS, for the hashes of
executables on first sight and two short ids. CPython's built-in SHA-256 and BLAKE2 need no
library. The price is speed on big files: ~240 MB/s against OpenSSL's ~1.2 GB/s here (4 ms per
MiB of a new executable, once per file version; hashing.py caches the result and caps the
size). Falls back to hashlib where the built-in modules are missing.
"""

from __future__ import annotations

from typing import Any

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
