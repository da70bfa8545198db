"""Console access tokens: how they are made, stored and checked.

A token is 32 random bytes (``tsc_`` + URL-safe base64), shown once to its owner. The hub
keeps only its SHA-256 (``sha256:HEX``) in a token list, the way it keeps CURVE public keys
in an allow-list: ``threatseer keys gen --type console -o alice.token`` writes the token to
``alice.token`` (0600) and the hash line to ``alice.token.pub``, which goes into
``console.viewer_tokens`` or ``console.admin_tokens``. A plain hash suffices (no salt, no
slow KDF) because the token is random, not a password. Lists are re-read when they change, so
revoking a token is deleting its line.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import secrets
import time
from dataclasses import dataclass
from typing import Any

from threatseer.hub.listfile import ListFiles

log = logging.getLogger("threatseer.hub.console")
PREFIX = "tsc_"
HASH_PREFIX = "sha256:"
VIEWER = "viewer"
ADMIN = "admin"
MAX_TOKEN_LEN = 256


def new_token() -> tuple[str, str]:
    """``(token, its hash line)``: the secret and public halves for ``keys gen``."""
    token = PREFIX + base64.urlsafe_b64encode(secrets.token_bytes(32)).decode().rstrip("=")
    return token, token_hash(token)


def token_hash(token: str) -> str:
    return HASH_PREFIX + hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class Identity:
    """Who a request comes from: the token's name (its list comment) and role."""

    name: str
    role: str

    @property
    def admin(self) -> bool:
        return self.role == ADMIN


class TokenList:
    """Hash lines from a file or a directory of files (first token of each line; ``#``
    comments; the comment names the holder). Re-read when a file's mtime, size or the
    directory listing changes; a bad line is logged with file:line and skipped."""

    def __init__(self, path: str, role: str) -> None:
        self.path = path
        self.role = role
        self.hashes: dict[str, str] = {}  # hash -> name
        self._list = ListFiles(path)
        self._stamp: Any = None
        self.errors = 0
        self.refresh()

    def refresh(self) -> None:
        stamp = self._list.stamp()
        if stamp == self._stamp and stamp is not None:
            return
        found: dict[str, str] = {}
        try:
            for path, lineno, word, holder in self._list.entries():
                h = word.lower()
                if not (h.startswith(HASH_PREFIX) and len(h) == len(HASH_PREFIX) + 64
                        and all(c in "0123456789abcdef" for c in h[len(HASH_PREFIX):])):
                    self.errors += 1
                    log.warning("%s:%d: not a console token hash (sha256:HEX), skipped",
                                path, lineno)
                    continue
                found[h] = holder.removesuffix(".pub")
        except OSError as exc:
            self.errors += 1
            log.error("console %s tokens %s unreadable (%s): keeping %d", self.role, self.path,
                      exc.strerror, len(self.hashes))
            self._stamp = stamp
            return
        if set(found) != set(self.hashes):
            log.info("console %s tokens %s: %d", self.role, self.path, len(found))
        self.hashes = found
        self._stamp = stamp


class Tokens:
    """The viewer and admin lists together; :meth:`identify` maps a presented token to an
    :class:`Identity` (admin wins when a hash is in both). Lists are checked for changes at
    most once a second."""

    def __init__(self, viewer_path: str, admin_path: str, check_interval_s: float = 1.0) -> None:
        self.lists = [TokenList(admin_path, ADMIN), TokenList(viewer_path, VIEWER)]
        self.check_interval_s = check_interval_s
        self._next_check = time.monotonic() + check_interval_s

    def identify(self, token: str) -> Identity | None:
        if not token or len(token) > MAX_TOKEN_LEN:
            return None
        now = time.monotonic()
        if now >= self._next_check:
            self._next_check = now + self.check_interval_s
            for lst in self.lists:
                lst.refresh()
        h = token_hash(token)
        for lst in self.lists:
            name = lst.hashes.get(h)
            if name is not None:
                return Identity(name, lst.role)
        return None

    def count(self) -> dict[str, int]:
        return {lst.role: len(lst.hashes) for lst in self.lists}
