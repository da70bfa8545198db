"""A bundle's files, from a directory or a built archive, and the deterministic archive.

The archive is a gzip'd tar whose bytes depend only on the files' paths and contents
(sorted members, zero times and owners, fixed modes), so two builds of one directory are
byte-identical. The content digest covers paths and contents but not ``SIGNATURE.json``,
which signing appends to the same archive.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import tarfile
from pathlib import Path

SIGNATURE_MEMBER = "SIGNATURE.json"
MAX_ARCHIVE_BYTES = 64 * 1024 * 1024
MAX_CONTENT_BYTES = 256 * 1024 * 1024  # uncompressed: refuse gzip bombs
_SKIP_DIRS = {"__pycache__", ".git"}

Files = dict[str, bytes]  # posix relative path -> content


class ArchiveError(ValueError):
    """The archive cannot be read (not a tar.gz, unsafe paths, too big)."""


def read_dir(path: str | Path) -> Files:
    root = Path(path)
    files: Files = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root)
        if any(part.startswith(".") or part in _SKIP_DIRS for part in rel.parts):
            continue
        if p.is_file():
            files[rel.as_posix()] = p.read_bytes()
    return files


def read_archive(data: bytes) -> tuple[Files, bytes | None]:
    """(files, signature member or None) of an archive's bytes."""
    if len(data) > MAX_ARCHIVE_BYTES:
        raise ArchiveError(f"archive larger than {MAX_ARCHIVE_BYTES} bytes")
    files: Files = {}
    signature = None
    total = 0
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
            for member in tar:
                name = member.name
                if not member.isfile():
                    if member.isdir():
                        continue
                    raise ArchiveError(f"{name}: only regular files are allowed")
                if name.startswith("/") or ".." in name.split("/"):
                    raise ArchiveError(f"{name}: unsafe path")
                total += member.size
                if total > MAX_CONTENT_BYTES:
                    raise ArchiveError(f"archive content larger than {MAX_CONTENT_BYTES} bytes")
                fh = tar.extractfile(member)
                content = fh.read() if fh else b""
                if name == SIGNATURE_MEMBER:
                    signature = content
                else:
                    files[name] = content
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise ArchiveError(f"not a bundle archive: {exc}") from None
    return files, signature


def read_files(path: str | Path) -> tuple[Files, bytes | None]:
    """Files of a bundle directory or archive file (and the archive's signature)."""
    p = Path(path)
    if p.is_dir():
        return read_dir(p), None
    try:
        return read_archive(p.read_bytes())
    except OSError as exc:
        raise ArchiveError(f"{p}: cannot read: {exc.strerror or exc}") from None


def content_digest(files: Files) -> str:
    """sha256 over sorted (path, sha256(content)): the bundle's identity."""
    h = hashlib.sha256()
    for name in sorted(files):
        if name == SIGNATURE_MEMBER:
            continue
        h.update(name.encode() + b"\0" + hashlib.sha256(files[name]).hexdigest().encode() + b"\n")
    return h.hexdigest()


def build_archive(files: Files, signature: bytes | None = None) -> bytes:
    """Deterministic tar.gz of ``files`` (plus the signature member when given)."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        items = sorted((n, c) for n, c in files.items() if n != SIGNATURE_MEMBER)
        if signature is not None:
            items.append((SIGNATURE_MEMBER, signature))
        for name, content in items:
            info = tarfile.TarInfo(name)
            info.size = len(content)
            info.mtime = 0
            info.mode = 0o644
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            tar.addfile(info, io.BytesIO(content))
    out = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=out, mtime=0, compresslevel=9) as gz:
        gz.write(raw.getvalue())
    return out.getvalue()
