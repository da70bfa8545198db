"""The hub's authenticated admin endpoint for bundles (publish, list, rollback, unstack) and
its client.

Transport: a ZeroMQ REP socket. A request is ``[header, signature, payload]``: ``header`` is
canonical JSON ``{"op", "args", "ts", "nonce", "key", "hub", "payload_sha256"}`` and
``signature`` an ed25519 signature of ``threatseer-admin-v1:`` + header by an admin key. The
server accepts a request (``list`` too: what a hub runs is not for everyone) only from a
configured admin key, within ``MAX_SKEW`` seconds of its clock, with a nonce it has not seen
(replay protection), and naming this hub: ``hub`` is the id the hub keeps in its state
directory, which the client asks for first (``hello``, the one request without a key), so a
request signed for one hub is refused by every other (no replay across a fleet). Replies are
JSON ``{"ok": bool, "error": str, ...}``. A refused bundle leaves the previous one active.

Local layers (hub/rules/local_layer.py) go through the same operations: ``publish`` stacks a
local layer on the active base, ``rollback`` with ``{"layer": "local"}`` activates an earlier
one, ``unstack`` runs the base alone.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import zmq
from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey, VerifyKey

from threatseer.hub.rules.archive import MAX_ARCHIVE_BYTES
from threatseer.hub.rules.model import BASE, LOCAL, Bundle
from threatseer.hub.rules.signing import b64, load_verify_key
from threatseer.hub.rules.store import BundleStore, StoreError

log = logging.getLogger(__name__)
ADMIN_CONTEXT = b"threatseer-admin-v1:"
MAX_SKEW = 60.0
AUTHENTICATED_OPS = {"publish", "rollback", "unstack", "list"}
HUB_ID_FILE = "admin_hub_id"


class AdminError(RuntimeError):
    """The hub refused a request or did not answer."""


def _canonical(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


def _summary(bundle: Bundle) -> dict[str, Any]:
    local = bundle.local
    return {"name": bundle.manifest.name, "version": bundle.manifest.version,
            "digest": bundle.digest, "rules": len(bundle.ruleset),
            "unsupported": len(bundle.unsupported),
            "local": {"name": local.manifest.name, "version": local.manifest.version,
                      "digest": local.digest} if local is not None else None}


class AdminServer(threading.Thread):
    """Serves the admin endpoint on a thread; ``on_activate(bundle)`` runs after each swap."""

    def __init__(
        self,
        store: BundleStore,
        endpoint: str,
        admin_keys: Iterable[VerifyKey | str | Path],
        on_activate: Callable[[Bundle], None] | None = None,
        context: zmq.Context | None = None,
    ) -> None:
        super().__init__(name="threatseer-rules-admin", daemon=True)
        self.store = store
        self.endpoint = endpoint
        self.admin_keys = {b64(bytes(k)): k for k in (
            k if isinstance(k, VerifyKey) else load_verify_key(k) for k in admin_keys)}
        self.on_activate = on_activate
        # A context of its own unless given one: terminating it when the thread ends waits for
        # the socket's close, so the endpoint is free again once stop() returns.
        self._own_ctx = context is None
        self._ctx = context or zmq.Context()
        self._stopping = threading.Event()
        self._ready = threading.Event()
        # nonce -> time accepted; kept on disk so a restart does not reopen the replay window
        self._seen_path = store.dir / "admin_nonces.json"
        self._seen: dict[str, float] = self._load_seen()
        self.hub_id = self._load_hub_id(store.dir / HUB_ID_FILE)
        self.counters = {"requests": 0, "refused": 0, "activations": 0}
        self.bind_error: Exception | None = None

    def _load_seen(self) -> dict[str, float]:
        try:
            seen = json.loads(self._seen_path.read_text())
            return {str(n): float(t) for n, t in seen.items()}
        except (OSError, ValueError, AttributeError, TypeError):
            return {}

    @staticmethod
    def _load_hub_id(path: Path) -> str:
        """This hub's id for signed requests: made once, kept with its state."""
        try:
            hub_id = path.read_text().strip()
            if len(hub_id) == 32:
                return hub_id
        except OSError:
            pass
        hub_id = os.urandom(16).hex()
        try:
            path.write_text(hub_id + "\n")
        except OSError as exc:
            log.warning("cannot keep the admin hub id in %s: %s", path, exc)
        return hub_id

    def _remember(self, nonce: str, now: float) -> None:
        self._seen = {n: t for n, t in self._seen.items() if now - t <= 2 * MAX_SKEW}
        self._seen[nonce] = now
        try:
            tmp = self._seen_path.with_suffix(".tmp")
            tmp.write_text(json.dumps(self._seen))
            os.replace(tmp, self._seen_path)
        except OSError as exc:
            log.warning("cannot persist admin nonces: %s", exc)

    # ---- lifecycle --------------------------------------------------------------

    def start(self) -> None:
        super().start()
        self._ready.wait(5)
        if self.bind_error is not None:
            raise self.bind_error

    def stop(self, timeout: float = 5.0) -> None:
        self._stopping.set()
        self.join(timeout)

    def run(self) -> None:
        sock = self._ctx.socket(zmq.REP)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.MAXMSGSIZE, MAX_ARCHIVE_BYTES + 65536)
        try:
            sock.bind(self.endpoint)
        except zmq.ZMQError as exc:
            self.bind_error = exc
            self._ready.set()
            sock.close()
            self._release()
            return
        self._ready.set()
        poller = zmq.Poller()
        poller.register(sock, zmq.POLLIN)
        try:
            while not self._stopping.is_set():
                if not poller.poll(100):
                    continue
                frames = sock.recv_multipart()
                try:
                    reply = self.handle(frames)
                except Exception as exc:  # never let one request kill the endpoint
                    log.exception("admin request failed")
                    reply = {"ok": False, "error": f"internal error: {exc}"}
                if not reply.get("ok"):
                    self.counters["refused"] += 1
                sock.send(_canonical(reply))
        finally:
            sock.close()
            self._release()

    def _release(self) -> None:
        if self._own_ctx:
            self._ctx.term()

    # ---- requests ---------------------------------------------------------------

    def authenticate(self, frames: list[bytes]) -> tuple[dict[str, Any], bytes]:
        """The verified header and payload, or raise AdminError with the reason."""
        if len(frames) not in (2, 3):
            raise AdminError("malformed request")
        try:
            header = json.loads(frames[0])
            assert isinstance(header, dict)
        except (ValueError, AssertionError):
            raise AdminError("malformed request header") from None
        payload = frames[2] if len(frames) == 3 else b""
        op = header.get("op")
        if op not in AUTHENTICATED_OPS:
            return header, payload  # hello, or an unknown op (refused by handle)
        key = self.admin_keys.get(str(header.get("key")))
        if key is None:
            raise AdminError("not authorized: unknown admin key")
        try:
            key.verify(ADMIN_CONTEXT + frames[0], frames[1])
        except (BadSignatureError, ValueError):
            raise AdminError("not authorized: bad signature") from None
        ts, nonce = header.get("ts"), str(header.get("nonce", ""))
        now = time.time()
        if not isinstance(ts, int | float) or abs(now - ts) > MAX_SKEW:
            raise AdminError("not authorized: request timestamp outside the allowed window")
        if len(nonce) < 16:
            raise AdminError("not authorized: missing nonce")
        if nonce in self._seen:
            raise AdminError("not authorized: replayed request")
        if header.get("hub") != self.hub_id:
            raise AdminError("not authorized: the request was signed for another hub")
        if header.get("payload_sha256") != hashlib.sha256(payload).hexdigest():
            raise AdminError("not authorized: payload does not match the signed header")
        self._remember(nonce, now)
        return header, payload

    def handle(self, frames: list[bytes]) -> dict[str, Any]:
        self.counters["requests"] += 1
        try:
            header, payload = self.authenticate(frames)
        except AdminError as exc:
            return {"ok": False, "error": str(exc)}
        op, args = header.get("op"), header.get("args") or {}
        try:
            if op == "hello":
                return {"ok": True, "hub": self.hub_id}
            if op == "list":
                return {"ok": True, "installed": self.store.installed(),
                        "active": self.store.active_version(),
                        "active_local": self.store.active_local_version()}
            if op == "publish":
                bundle = self.store.publish(payload)
            elif op == "rollback":
                version = args.get("version")
                layer = LOCAL if args.get("layer") == LOCAL else BASE
                bundle = self.store.rollback(str(version) if version else None, layer)
            elif op == "unstack":
                bundle = self.store.unstack()
            else:
                return {"ok": False, "error": f"unknown operation {op!r}"}
        except StoreError as exc:
            return {"ok": False, "error": str(exc)}
        self.counters["activations"] += 1
        reply: dict[str, Any] = {"ok": True, "active": _summary(bundle)}
        if self.on_activate is not None:
            try:
                self.on_activate(bundle)
            except Exception as exc:  # the store changed; say the running hub did not
                log.exception("on_activate failed")
                reply["warning"] = f"installed and marked active, but the swap failed: {exc}"
        return reply


class AdminClient:
    """Talks to a hub's admin endpoint (used by ``threatseer rules publish|list|rollback``)."""

    def __init__(self, endpoint: str, key: SigningKey | None = None,
                 timeout: float = 30.0, context: zmq.Context | None = None) -> None:
        self.endpoint, self.key, self.timeout = endpoint, key, timeout
        self._ctx = context or zmq.Context.instance()
        self.hub_id: str | None = None  # the hub's, asked once (see the module doc)

    def frames(self, op: str, args: dict[str, Any] | None = None,
               payload: bytes = b"") -> list[bytes]:
        if self.hub_id is None:
            hello = self.send_frames([_canonical({"op": "hello"}), b""])
            self.hub_id = str(hello.get("hub") or "")
        header = {"op": op, "args": args or {}, "ts": time.time(),
                  "nonce": os.urandom(16).hex(), "hub": self.hub_id,
                  "payload_sha256": hashlib.sha256(payload).hexdigest(),
                  "key": b64(bytes(self.key.verify_key)) if self.key else ""}
        raw = _canonical(header)
        sig = self.key.sign(ADMIN_CONTEXT + raw).signature if self.key else b""
        return [raw, sig, payload]

    def send_frames(self, frames: list[bytes]) -> dict[str, Any]:
        sock = self._ctx.socket(zmq.REQ)
        sock.setsockopt(zmq.LINGER, 0)
        try:
            sock.connect(self.endpoint)
            sock.send_multipart(frames)
            if not sock.poll(int(self.timeout * 1000)):
                raise AdminError(f"no answer from {self.endpoint} within {self.timeout:g}s")
            reply = json.loads(sock.recv())
        finally:
            sock.close()
        return reply

    def request(self, op: str, args: dict[str, Any] | None = None,
                payload: bytes = b"") -> dict[str, Any]:
        reply = self.send_frames(self.frames(op, args, payload))
        if not reply.get("ok"):
            raise AdminError(reply.get("error") or "refused")
        return reply

    def publish(self, archive: bytes) -> dict[str, Any]:
        return self.request("publish", payload=archive)

    def list(self) -> dict[str, Any]:
        return self.request("list")

    def rollback(self, version: str | None = None, local: bool = False) -> dict[str, Any]:
        args: dict[str, Any] = {"version": version} if version else {}
        if local:
            args["layer"] = LOCAL
        return self.request("rollback", args)

    def unstack(self) -> dict[str, Any]:
        return self.request("unstack")
