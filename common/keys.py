"""Key files and CURVE sockets: the one place sensors, hubs, taps and the demo set them up.

CURVE keys are 40 characters of Z85 text (ZeroMQ's encoding); a key file holds one as the
first token of its first non-empty line, which is what ``threatseer keys gen --type curve``
and the Salt formula write. Secret key files are created 0600 and never replaced in place.
"""

from __future__ import annotations

import os
from pathlib import Path

import zmq
import zmq.utils.z85

Z85_KEY_LEN = 40


def parse_key(token: str) -> bytes | None:
    """The key if ``token`` is a Z85 CURVE key (40 characters that decode), else None."""
    if not isinstance(token, str) or len(token) != Z85_KEY_LEN:
        return None
    try:
        zmq.utils.z85.decode(token)
    except Exception:
        return None
    return token.encode()


def read_key(value: str, what: str = "key") -> bytes:
    """A Z85 CURVE key given as its 40 characters or as a file holding it (the first token
    of the first line that has one). Raises ValueError naming ``what``."""
    text = value.strip()
    if os.path.isfile(value):
        try:
            with open(value) as f:
                text = next((ln.split()[0] for ln in f if ln.split()), "")
        except OSError as exc:
            raise ValueError(f"{what}: cannot read {value}: {exc.strerror}") from None
    key = parse_key(text)
    if key is None:
        raise ValueError(f"{what}: not a Z85 CURVE key (40 characters) nor a file holding one")
    return key


def curve_keypair() -> tuple[str, str]:
    """A new CURVE key pair as Z85 text: ``(secret, public)``."""
    public, secret = zmq.curve_keypair()
    return secret.decode(), public.decode()


def public_of(secret: bytes) -> bytes:
    """The public half of a Z85 CURVE secret key."""
    return zmq.curve_public(secret)


def curve_client(sock: zmq.Socket, secret: bytes, server: bytes) -> None:
    """Make ``sock`` (before connect) a CURVE client with our ``secret`` key, talking to the
    server whose public key is ``server``."""
    sock.curve_secretkey = secret
    sock.curve_publickey = public_of(secret)
    sock.curve_serverkey = server


def curve_server(sock: zmq.Socket, secret: bytes, domain: str) -> None:
    """Make ``sock`` (before bind) a CURVE server in ZAP ``domain`` (whose handler decides
    which client keys are let in)."""
    sock.curve_server = True
    sock.curve_secretkey = secret
    sock.setsockopt(zmq.ZAP_DOMAIN, domain.encode())


def write_key_pair(path: str | Path, secret: str, public: str) -> tuple[Path, Path]:
    """Write ``path`` (0600, never world-readable, even briefly; FileExistsError rather than
    replace a key) and ``path.pub`` (0644)."""
    secret_path = Path(path)
    public_path = secret_path.with_name(secret_path.name + ".pub")
    fd = os.open(secret_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(secret)
    public_path.write_text(public)
    os.chmod(public_path, 0o644)
    return secret_path, public_path
