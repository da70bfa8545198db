"""Installed bundle versions on disk, which one is active, install/activate/rollback.

Layout under ``state_dir``: ``bundles/<version>.tar.gz`` (archives exactly as published,
signature included) and ``state.json`` (active version and the activation history used by
rollback), written atomically so the active bundle survives hub restarts and crashes.

A bundle is verified, compiled and its embedded tests run BEFORE it is accepted: a bad bundle
raises and changes nothing. Verified means signed by one of the trusted keys; a bundle without
such a signature is refused unless the store was made with ``allow_unsigned`` (a lab's or a
test's choice, which the hub says at start), so an empty key list never means "anything goes".

The active bundle survives restarts; one that no longer loads at start (its signer is no longer
trusted, its file is damaged) gives way to the newest earlier one of the history that does, so
a hub never runs without rules because of it. A rollback changes the history only once the
bundle it goes to has loaded.
"""

from __future__ import annotations

import json
import logging
import os
import re
import tempfile
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from nacl.signing import VerifyKey

from threatseer.hub.rules.archive import (
    ArchiveError,
    build_archive,
    content_digest,
    read_archive,
    read_dir,
)
from threatseer.hub.rules.bundle import load_files
from threatseer.hub.rules.model import Bundle
from threatseer.hub.rules.signing import SignatureError, load_verify_key, verify_files
from threatseer.hub.rules.testing import run_tests
from threatseer.hub.rules.yamlfile import BundleError

log = logging.getLogger(__name__)
_VERSION = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,63}\Z")


class StoreError(ValueError):
    """A bundle was refused or a version is unknown; ``str()`` says why."""


def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class BundleStore:
    def __init__(
        self, state_dir: str | Path, trusted_keys: Iterable[VerifyKey | str | Path] = (),
        allow_unsigned: bool = False,
    ) -> None:
        self.dir = Path(state_dir)
        self.bundles_dir = self.dir / "bundles"
        self.bundles_dir.mkdir(parents=True, exist_ok=True)
        self.trusted = [k if isinstance(k, VerifyKey) else load_verify_key(k)
                        for k in trusted_keys]
        self.allow_unsigned = allow_unsigned
        self._lock = threading.RLock()
        self._active: Bundle | None = None
        self.last_error = ""

    # ---- state ----------------------------------------------------------------------

    def _state(self) -> dict[str, Any]:
        try:
            state = json.loads((self.dir / "state.json").read_text())
            return state if isinstance(state, dict) else {}
        except (OSError, ValueError):
            return {}

    def _save_state(self, state: dict[str, Any]) -> None:
        _atomic_write(self.dir / "state.json", json.dumps(state, indent=1).encode())

    def _path(self, version: str) -> Path:
        if not _VERSION.match(version):
            raise StoreError(f"invalid bundle version {version!r}")
        return self.bundles_dir / f"{version}.tar.gz"

    # ---- loading --------------------------------------------------------------------

    def compile(self, data: bytes, source: str = "<published>") -> Bundle:
        """Verify, compile and test an archive without installing it."""
        try:
            files, signature = read_archive(data)
        except ArchiveError as exc:
            raise StoreError(str(exc)) from None
        if self.trusted and signature is not None:
            try:
                verify_files(files, signature, self.trusted)
            except SignatureError as exc:
                raise StoreError(f"refused: {exc}") from None
        elif not self.allow_unsigned:
            why = ("bundle is not signed" if self.trusted else
                   "no trusted signing keys are configured (admin.trusted_signing_keys), so "
                   "no bundle can be verified")
            raise StoreError(f"refused: {why}; sign bundles with `threatseer rules sign`, or "
                             "set admin.allow_unsigned: true to accept unsigned bundles")
        try:
            bundle = load_files(files, source)
        except BundleError as exc:
            raise StoreError(f"bundle does not compile:\n{exc}") from None
        _, failures = run_tests(bundle)
        if failures:
            raise StoreError("bundle tests failed:\n" + "\n".join(failures))
        return bundle

    def _load_version(self, version: str) -> Bundle:
        path = self._path(version)
        try:
            data = path.read_bytes()
        except OSError:
            raise StoreError(f"version {version!r} is not installed") from None
        return self.compile(data, f"{version}")

    # ---- operations -----------------------------------------------------------------

    def installed(self) -> list[dict[str, Any]]:
        active = self._state().get("active")
        out = []
        for p in sorted(self.bundles_dir.glob("*.tar.gz")):
            version = p.name.removesuffix(".tar.gz")
            try:
                files, signature = read_archive(p.read_bytes())
                digest = content_digest(files)
            except (ArchiveError, OSError):
                digest, signature = "unreadable", None
            out.append({"version": version, "digest": digest, "signed": signature is not None,
                        "active": version == active})
        return out

    def install(self, data: bytes) -> Bundle:
        """Check and store an archive (not activated). Same version + same content is a no-op."""
        with self._lock:
            bundle = self.compile(data)
            version = bundle.manifest.version
            path = self._path(version)
            if path.exists():
                try:
                    old_digest = content_digest(read_archive(path.read_bytes())[0])
                except (ArchiveError, OSError):
                    old_digest = ""
                if old_digest != bundle.digest:
                    raise StoreError(f"version {version} is already installed with other "
                                     "content: bump the manifest version")
            _atomic_write(path, data)
            bundle.source = str(path)
            return bundle

    def install_path(self, path: str | Path) -> Bundle:
        """Install a bundle directory (built into an archive) or archive file."""
        p = Path(path)
        data = build_archive(read_dir(p)) if p.is_dir() else p.read_bytes()
        return self.install(data)

    def _history(self) -> list[str]:
        return [v for v in self._state().get("history", []) if isinstance(v, str)]

    def activate(self, version: str, history: list[str] | None = None) -> Bundle:
        """Load ``version`` and make it the active one (nothing changes when it does not
        load). It is pushed on the history, or ``history`` is written as given."""
        with self._lock:
            bundle = self._load_version(version)
            if history is None:
                history = self._history()
                if not history or history[-1] != version:
                    history.append(version)
            self._save_state({"active": version, "history": history[-50:]})
            self._active = bundle
            return bundle

    def publish(self, data: bytes) -> Bundle:
        """Install and activate in one step (what the admin endpoint does)."""
        with self._lock:
            bundle = self.install(data)
            return self.activate(bundle.manifest.version)

    def rollback(self, version: str | None = None) -> Bundle:
        """Activate ``version``, or the one active before the current one."""
        with self._lock:
            if version is not None:
                return self.activate(version)
            history = self._history()
            current = self._state().get("active")
            while history and history[-1] == current:
                history.pop()
            while history:
                candidate = history[-1]
                if self._path(candidate).exists():
                    # written only once the candidate has loaded: a failed rollback (say, a
                    # bundle whose signer is no longer trusted) leaves the history as it was
                    return self.activate(candidate, history=history)
                history.pop()
            raise StoreError("no earlier version to roll back to")

    def active(self) -> Bundle | None:
        """The active bundle (loaded from disk after a restart), or None."""
        with self._lock:
            if self._active is not None:
                return self._active
            version = self._state().get("active")
            if not isinstance(version, str):
                return None
            try:
                self._active = self._load_version(version)
                return self._active
            except StoreError as exc:
                self.last_error = f"active bundle {version} cannot be loaded: {exc}"
                log.error("%s", self.last_error)
            # The last good one: the newest earlier version of the history that loads.
            history = self._history()
            for i in range(len(history) - 1, -1, -1):
                candidate = history[i]
                if candidate == version or not self._path(candidate).exists():
                    continue
                try:
                    bundle = self.activate(candidate, history=history[:i + 1])
                except StoreError as exc:
                    log.error("earlier bundle %s cannot be loaded either: %s", candidate, exc)
                    continue
                log.error("running the last good bundle, %s, instead of %s", candidate,
                          version)
                return bundle
            return None

    def active_version(self) -> str | None:
        version = self._state().get("active")
        return version if isinstance(version, str) else None
