"""Ed25519 keys (PyNaCl) for signing bundles and authenticating admins.

Key files are one line of base64: the 32-byte seed (secret, written 0600) or the public key.
A bundle signature is ``SIGNATURE.json`` inside the archive: the content digest, the signer's
public key and the signature over ``threatseer-bundle-v1:`` + digest.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable
from pathlib import Path

from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey, VerifyKey

from threatseer.hub.rules.archive import Files, build_archive, content_digest, read_archive

BUNDLE_CONTEXT = b"threatseer-bundle-v1:"


class SignatureError(ValueError):
    """Unsigned, tampered, or signed by a key that is not trusted."""


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def generate_ed25519() -> tuple[str, str]:
    """(secret, public) key file contents."""
    key = SigningKey.generate()
    return b64(bytes(key)) + "\n", b64(bytes(key.verify_key)) + "\n"


def _decode(text: str, what: str, source: str) -> bytes:
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except ValueError:
        raw = b""
    if len(raw) != 32:
        raise SignatureError(f"{source}: not an ed25519 {what} (32 bytes of base64)")
    return raw


def load_signing_key(path: str | Path) -> SigningKey:
    return SigningKey(_decode(Path(path).read_text(errors="replace"), "secret key", str(path)))


def load_verify_key(path_or_text: str | Path) -> VerifyKey:
    """A public key from a file path or from its base64 text."""
    p = Path(path_or_text)
    if isinstance(path_or_text, Path) or p.is_file():
        return VerifyKey(_decode(p.read_text(errors="replace"), "public key", str(p)))
    return VerifyKey(_decode(str(path_or_text), "public key", "key"))


def sign_archive(data: bytes, key: SigningKey) -> bytes:
    """The archive with a signature over its content digest (replacing any old one)."""
    files, _ = read_archive(data)
    digest = content_digest(files)
    sig = key.sign(BUNDLE_CONTEXT + digest.encode()).signature
    doc = {"digest": digest, "key": b64(bytes(key.verify_key)), "signature": b64(sig)}
    return build_archive(files, json.dumps(doc, sort_keys=True).encode())


def verify_files(files: Files, signature: bytes | None, trusted: Iterable[VerifyKey]) -> str:
    """Check the signature against the trusted keys; return the signer's public key."""
    if signature is None:
        raise SignatureError("bundle is not signed")
    try:
        doc = json.loads(signature)
        sig = base64.b64decode(doc["signature"])
        signer = doc["key"]
    except (ValueError, KeyError, TypeError):
        raise SignatureError("bundle signature is malformed") from None
    digest = content_digest(files)
    if doc.get("digest") != digest:
        raise SignatureError("bundle content does not match its signature (tampered)")
    for key in trusted:
        if b64(bytes(key)) != signer:
            continue
        try:
            key.verify(BUNDLE_CONTEXT + digest.encode(), sig)
        except BadSignatureError:
            raise SignatureError("bad bundle signature (tampered)") from None
        return signer
    raise SignatureError(f"bundle is signed by an untrusted key {signer}")
