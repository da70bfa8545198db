"""Installed bundle versions on disk, which are active, install/activate/rollback.

Layout under ``state_dir``: ``bundles/<version>.tar.gz`` (base bundles, archives exactly as
published, signature included), ``local/<version>.tar.gz`` (local layers, stacked on the
active base: hub/rules/local_layer.py) and ``state.json`` (the active base and local layer and
their activation histories, used by rollback), written atomically so the active stack
survives hub restarts and crashes.

A bundle is verified, compiled and its embedded tests run BEFORE it is accepted: a bad bundle
raises and changes nothing. Verified means signed by one of the trusted keys; a bundle without
such a signature is refused unless the store was made with ``allow_unsigned`` (a lab's or a
test's choice, which the hub says at start), so an empty key list never means "anything goes".
The stack is checked too: a new base must take the active local layer, a local layer must
compile on the active base (the base's tests run against the base, the layer's against the
stack).

The active bundle survives restarts; a base that no longer loads at start (its signer is no
longer trusted, its file is damaged) gives way to the newest earlier one of the history that
does, so a hub never runs without rules because of it. A rollback changes the history only
once the bundle it goes to has loaded.
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
    Files,
    build_archive,
    content_digest,
    read_archive,
    read_dir,
)
from threatseer.hub.rules.bundle import is_local_layer, load_files, load_stack
from threatseer.hub.rules.model import BASE, LOCAL, Bundle
from threatseer.hub.rules.signing import SignatureError, load_verify_key, verify_files
from threatseer.hub.rules.testing import run_tests
from threatseer.hub.rules.yamlfile import BundleError

log = logging.getLogger(__name__)
_VERSION = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,63}\Z")
# state.json keys of each layer: (active version, history)
_STATE_KEYS = {BASE: ("active", "history"), LOCAL: ("local", "local_history")}


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
        self.allow_unsigned = allow_unsigned
        self.dir = Path(state_dir)
        self.bundles_dir = self.dir / "bundles"
        self.local_dir = self.dir / "local"
        self.bundles_dir.mkdir(parents=True, exist_ok=True)
        self.local_dir.mkdir(parents=True, exist_ok=True)
        self.trusted = [k if isinstance(k, VerifyKey) else load_verify_key(k)
                        for k in trusted_keys]
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

    def _path(self, version: str, layer: str = BASE) -> Path:
        if not _VERSION.match(version):
            raise StoreError(f"invalid bundle version {version!r}")
        return (self.local_dir if layer == LOCAL else self.bundles_dir) / f"{version}.tar.gz"

    # ---- loading --------------------------------------------------------------------

    def _verified(self, data: bytes) -> Files:
        """The files of an archive whose signature a trusted key made (when keys are set)."""
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
        return files

    def _files(self, version: str, layer: str) -> Files:
        try:
            data = self._path(version, layer).read_bytes()
        except OSError:
            what = "local layer" if layer == LOCAL else "version"
            raise StoreError(f"{what} {version!r} is not installed") from None
        return self._verified(data)

    @staticmethod
    def _base(files: Files, source: str) -> Bundle:
        """A base bundle compiled and its tests run."""
        try:
            bundle = load_files(files, source)
        except BundleError as exc:
            raise StoreError(f"bundle does not compile:\n{exc}") from None
        _, failures = run_tests(bundle)
        if failures:
            raise StoreError("bundle tests failed:\n" + "\n".join(failures))
        return bundle

    @staticmethod
    def _stack(base: Files, base_source: str, local: Files, local_source: str) -> Bundle:
        """A base with a local layer on it compiled, and the layer's tests run."""
        try:
            bundle = load_stack(base, base_source, local, local_source)
        except BundleError as exc:
            raise StoreError(f"local layer does not compile on {base_source}:\n{exc}") from None
        _, failures = run_tests(bundle)
        if failures:
            raise StoreError("local layer tests failed:\n" + "\n".join(failures))
        return bundle

    def _compose(self, base_version: str, local_version: str | None) -> Bundle:
        base = self._files(base_version, BASE)
        if local_version is None:
            return self._base(base, base_version)
        return self._stack(base, base_version, self._files(local_version, LOCAL),
                           f"local {local_version}")

    def compile(self, data: bytes, source: str = "<published>") -> Bundle:
        """Verify, compile and test an archive without installing it; return the bundle as
        the hub would run it: a local layer on the active base, or a base with the active
        local layer on it."""
        files = self._verified(data)
        if is_local_layer(files):
            base = self.active_version()
            if base is None:
                raise StoreError("a local layer needs an active base bundle: publish one first")
            return self._stack(self._files(base, BASE), base, files, source)
        bundle = self._base(files, source)
        local = self.active_local_version()
        if local is None:
            return bundle
        try:
            return self._stack(files, source, self._files(local, LOCAL), f"local {local}")
        except StoreError as exc:
            raise StoreError(f"the active local layer {local} does not apply to this bundle "
                             f"(publish a local layer that does, or `rules unstack` first): "
                             f"{exc}") from None

    # ---- operations -----------------------------------------------------------------

    def installed(self) -> list[dict[str, Any]]:
        """Every installed version: base bundles, then local layers, each marked active or
        not."""
        state = self._state()
        out = []
        for layer, directory in ((BASE, self.bundles_dir), (LOCAL, self.local_dir)):
            active = state.get(_STATE_KEYS[layer][0])
            for p in sorted(directory.glob("*.tar.gz")):
                version = p.name.removesuffix(".tar.gz")
                try:
                    files, signature = read_archive(p.read_bytes())
                    digest = content_digest(files)
                except (ArchiveError, OSError):
                    digest, signature = "unreadable", None
                out.append({"version": version, "layer": layer, "digest": digest,
                            "signed": signature is not None, "active": version == active})
        return out

    def install(self, data: bytes) -> Bundle:
        """Check and store an archive (not activated). Same version + same content is a no-op.
        Returns the bundle as it would run (see :meth:`compile`)."""
        with self._lock:
            bundle = self.compile(data)
            layer = LOCAL if is_local_layer(read_archive(data)[0]) else BASE
            own = bundle.local if layer == LOCAL and bundle.local else None
            version = own.manifest.version if own else bundle.manifest.version
            digest = own.digest if own else bundle.digest
            path = self._path(version, layer)
            if path.exists():
                try:
                    old_digest = content_digest(read_archive(path.read_bytes())[0])
                except (ArchiveError, OSError):
                    old_digest = ""
                if old_digest != digest:
                    raise StoreError(f"version {version} is already installed with other "
                                     "content: bump the manifest version")
            _atomic_write(path, data)
            if own is None:
                bundle.source = str(path)
            return bundle

    def install_path(self, path: str | Path) -> Bundle:
        """Install a bundle directory (built into an archive) or archive file."""
        p = Path(path)
        data = build_archive(read_dir(p)) if p.is_dir() else p.read_bytes()
        return self.install(data)

    def _activated(self, layer: str, version: str | None, bundle: Bundle,
                   push: bool = True) -> Bundle:
        state = self._state()
        key, hkey = _STATE_KEYS[layer]
        history = [v for v in state.get(hkey, []) if isinstance(v, str)]
        if push and version is not None and (not history or history[-1] != version):
            history.append(version)
        state[key], state[hkey] = version, history[-50:]
        self._save_state(state)
        self._active = bundle
        return bundle

    def activate(self, version: str, _push: bool = True) -> Bundle:
        """Make ``version`` the active base (with the active local layer on it)."""
        with self._lock:
            local = self.active_local_version()
            try:
                bundle = self._compose(version, local)
            except StoreError as exc:
                if local is None or "is not installed" in str(exc):
                    raise
                raise StoreError(f"the active local layer {local} does not apply to version "
                                 f"{version} (`rules unstack` first): {exc}") from None
            return self._activated(BASE, version, bundle, _push)

    def activate_local(self, version: str, _push: bool = True) -> Bundle:
        """Stack the installed local layer ``version`` on the active base."""
        with self._lock:
            base = self.active_version()
            if base is None:
                raise StoreError("a local layer needs an active base bundle: publish one first")
            return self._activated(LOCAL, version, self._compose(base, version), _push)

    def unstack(self) -> Bundle:
        """Run the active base alone (the local layer stays installed for a rollback)."""
        with self._lock:
            base = self.active_version()
            if base is None:
                raise StoreError("no active bundle")
            if self.active_local_version() is None:
                raise StoreError("no local layer is active")
            return self._activated(LOCAL, None, self._compose(base, None), push=False)

    def publish(self, data: bytes) -> Bundle:
        """Install and activate in one step (what the admin endpoint does); a local layer is
        stacked on the active base."""
        with self._lock:
            bundle = self.install(data)
            if bundle.local is not None and is_local_layer(read_archive(data)[0]):
                return self.activate_local(bundle.local.manifest.version)
            return self.activate(bundle.manifest.version)

    def rollback(self, version: str | None = None, layer: str = BASE) -> Bundle:
        """Activate ``version`` of ``layer``, or the one active before the current one."""
        activate = self.activate_local if layer == LOCAL else self.activate
        with self._lock:
            if version is not None:
                return activate(version)
            key, hkey = _STATE_KEYS[layer]
            state = self._state()
            history = [v for v in state.get(hkey, []) if isinstance(v, str)]
            current = state.get(key)
            while history and history[-1] == current:
                history.pop()
            while history:
                candidate = history[-1]
                if self._path(candidate, layer).exists():
                    bundle = activate(candidate, _push=False)
                    state = self._state()
                    state[hkey] = history
                    self._save_state(state)
                    return bundle
                history.pop()
            what = "local layer" if layer == LOCAL else "version"
            raise StoreError(f"no earlier {what} to roll back to")

    def active(self) -> Bundle | None:
        """The active bundle (loaded from disk after a restart), or None. When the active
        local layer cannot be loaded the base runs alone (and ``last_error`` says why)."""
        with self._lock:
            if self._active is not None:
                return self._active
            version = self.active_version()
            if version is None:
                return None
            local = self.active_local_version()
            try:
                self._active = self._compose(version, local)
            except StoreError as exc:
                if local is not None:
                    self.last_error = f"active local layer {local} cannot be loaded, running " \
                                      f"{version} alone: {exc}"
                    log.error("%s", self.last_error)
                    try:
                        self._active = self._compose(version, None)
                    except StoreError:
                        pass
                    else:
                        return self._active
                self.last_error = f"active bundle {version} cannot be loaded: {exc}"
                log.error("%s", self.last_error)
                return self._last_good(version)
            return self._active

    def _last_good(self, failed: str) -> Bundle | None:
        """The newest earlier base of the history that loads, made active (alone), or None."""
        key, hkey = _STATE_KEYS[BASE]
        history = [v for v in self._state().get(hkey, []) if isinstance(v, str)]
        for i in range(len(history) - 1, -1, -1):
            candidate = history[i]
            if candidate == failed or not self._path(candidate, BASE).exists():
                continue
            try:
                bundle = self._compose(candidate, None)
            except StoreError as exc:
                log.error("earlier bundle %s cannot be loaded either: %s", candidate, exc)
                continue
            state = self._state()
            state[key], state[hkey] = candidate, history[:i + 1]
            state[_STATE_KEYS[LOCAL][0]] = None  # its layer was made for the failed base
            self._save_state(state)
            self._active = bundle
            log.error("running the last good bundle, %s, instead of %s", candidate, failed)
            return bundle
        return None

    def active_version(self) -> str | None:
        version = self._state().get("active")
        return version if isinstance(version, str) else None

    def history(self) -> dict[str, Any]:
        """The active version, the versions activated before it (oldest first, as rollback
        walks them) and the installed versions with their install times: from the state
        file and the archive names only, so a status page can ask often."""
        state = self._state()
        history = [v for v in state.get("history", []) if isinstance(v, str)]
        installed = []
        for p in sorted(self.bundles_dir.glob("*.tar.gz")):
            try:
                installed.append({"version": p.name.removesuffix(".tar.gz"),
                                  "installed_at": p.stat().st_mtime})
            except OSError:
                continue
        active, local = state.get("active"), state.get("local")
        return {"active": active if isinstance(active, str) else None, "history": history,
                "local": local if isinstance(local, str) else None, "installed": installed}

    def active_local_version(self) -> str | None:
        version = self._state().get("local")
        return version if isinstance(version, str) else None
