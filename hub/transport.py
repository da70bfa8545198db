"""CURVE on the hub's sockets and the ZAP handler that decides who may connect.

Why our own ZAP thread (not ``zmq.auth``): we want per-domain, per-peer counters and
rate-limited log lines with the peer address, and an allow-list that reloads when its file
changes, without a restart. ZeroMQ asks the handler on ``inproc://zeromq.zap.01`` of the hub's
context at every handshake; the ingest ROUTER uses ZAP domain ``ingest`` (sensor keys,
``curve_allow_list``) and the PUB socket domain ``publish`` (subscriber keys,
``curve_subscriber_allow_list``).

A client that does not speak CURVE at all (plaintext, or a broken handshake) never reaches
ZAP: ZeroMQ drops it at the greeting. The handler watches each CURVE socket's monitor for
those failed handshakes and counts them as refused too (``no_curve`` per domain).

ZAP only runs at the handshake, so a key removed from a list is also enforced afterwards:
ingest checks each message's authenticated key (``User-Id``) against the current list, and
the PUB socket is re-bound when a subscriber key is revoked (every subscriber reconnects and
is asked again).
"""

from __future__ import annotations

import logging
import os
import struct
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import zmq
import zmq.utils.z85

from threatseer.common.keys import curve_server, parse_key, read_key
from threatseer.hub.listfile import ListFiles

log = logging.getLogger("threatseer.hub.transport")
ZAP_ENDPOINT = "inproc://zeromq.zap.01"
INGEST = "ingest"
PUBLISH = "publish"
MAX_TRACKED_PEERS = 10_000


class AllowList:
    """Z85 public keys from a file or a directory of files, one key a line (first token;
    ``# comment`` lines and trailing comments allowed: Salt writes ``KEY  # minion``).
    Re-read when a file's mtime or the directory listing changes; a bad line is logged with
    file:line and skipped, an unreadable list keeps the last good keys."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.keys: frozenset[bytes] = frozenset()
        self.names: dict[bytes, str] = {}
        self._list = ListFiles(path)
        self._stamp: Any = None
        self.reloads = 0
        self.errors = 0
        self.refresh()

    def refresh(self) -> bool:
        """Reload if changed; returns True when the key set changed."""
        stamp = self._list.stamp()
        if stamp == self._stamp and stamp is not None:
            return False
        keys: dict[bytes, str] = {}
        try:
            for path, lineno, word, holder in self._list.entries():
                key = parse_key(word)
                if key is None:
                    self.errors += 1
                    log.warning("%s:%d: not a Z85 CURVE public key, skipped", path, lineno)
                    continue
                keys[key] = holder
        except OSError as exc:
            if stamp is None and self._stamp is None and self.reloads + self.errors:
                return False  # still missing: said so already
            self.errors += 1
            if self._stamp is not None or self.keys:
                log.error("allow-list %s unreadable (%s): keeping %d keys", self.path,
                          exc.strerror, len(self.keys))
            else:
                log.error("allow-list %s unreadable (%s): no key is allowed", self.path,
                          exc.strerror)
            self._stamp = stamp
            return False
        self._stamp = stamp
        changed = frozenset(keys) != self.keys
        self.names = keys
        self.keys = frozenset(keys)
        if changed:
            self.reloads += 1
            log.info("allow-list %s: %d keys", self.path, len(self.keys))
        return changed


@dataclass
class DomainStats:
    accepted: int = 0
    refused: int = 0
    no_curve: int = 0  # of the refused: handshakes that failed before ZAP (not CURVE)
    revoked_messages: int = 0
    refused_peers: dict[str, int] = field(default_factory=dict)


class Authenticator:
    """The ZAP REP thread (see the module doc). ``on_revoke(domain)`` is called from this
    thread when keys leave a list."""

    def __init__(self, ctx: zmq.Context, lists: dict[str, AllowList], metrics: Any = None,
                 log_interval_s: float = 10.0, check_interval_s: float = 1.0) -> None:
        self.ctx = ctx
        self.lists = lists
        self.metrics = metrics
        self.stats = {domain: DomainStats() for domain in lists}
        self.log_interval_s = log_interval_s
        self.check_interval_s = check_interval_s
        self.on_revoke: Any = None
        self._last_log: dict[tuple[str, str], tuple[float, int]] = {}
        self._stop = threading.Event()
        self._monitors: dict[Any, str] = {}  # monitor PAIR socket -> domain (ZAP thread's)
        self._new_monitors: list[tuple[Any, str]] = []
        self._monitor_lock = threading.Lock()
        self._sock = ctx.socket(zmq.REP)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.bind(ZAP_ENDPOINT)  # before any CURVE socket binds
        self._thread = threading.Thread(target=self._run, name="hub-zap", daemon=True)
        self._thread.start()

    def allowed(self, domain: str, key: bytes) -> bool:
        lst = self.lists.get(domain)
        return lst is not None and key in lst.keys

    def watch(self, sock: zmq.Socket, domain: str) -> None:
        """Count ``sock``'s handshakes that fail before ZAP (see the module doc); the monitor
        socket is made here and read (and closed) by the ZAP thread."""
        mon = sock.get_monitor_socket(zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
                                      | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
                                      | zmq.EVENT_MONITOR_STOPPED)
        with self._monitor_lock:
            self._new_monitors.append((mon, domain))

    def _read_monitor(self, mon: Any) -> None:
        frames = mon.recv_multipart()
        event = struct.unpack_from("=H", frames[0])[0] if frames and len(frames[0]) >= 2 else 0
        domain = self._monitors.get(mon, "?")
        if event == zmq.EVENT_MONITOR_STOPPED:  # its socket is closed (or re-bound)
            del self._monitors[mon]
            mon.close(0)
            return
        st = self.stats.setdefault(domain, DomainStats())
        st.refused += 1
        st.no_curve += 1
        if self.metrics is not None:
            self.metrics.child(self.metrics.auth, domain, "refused").inc()
        self.warn((domain, "no-curve"), f"{domain}: refused a client whose handshake failed "
                  "before authentication (not CURVE, or not this hub's key)")

    def _run(self) -> None:
        sock = self._sock
        poller = zmq.Poller()
        poller.register(sock, zmq.POLLIN)
        next_check = time.monotonic() + self.check_interval_s
        while not self._stop.is_set():
            try:
                if self._new_monitors:
                    with self._monitor_lock:
                        new, self._new_monitors = self._new_monitors, []
                    for mon, domain in new:
                        self._monitors[mon] = domain
                        poller.register(mon, zmq.POLLIN)
                for ready, _ in poller.poll(200):
                    if ready is sock:
                        self._answer(sock.recv_multipart())
                    elif ready in self._monitors:
                        self._read_monitor(ready)
                        if ready not in self._monitors:
                            poller.unregister(ready)
                if time.monotonic() >= next_check:
                    next_check = time.monotonic() + self.check_interval_s
                    self._refresh()
            except zmq.ZMQError as exc:
                if exc.errno == zmq.ETERM or self._stop.is_set():
                    break
                log.error("ZAP handler: %s", exc)
            except Exception:
                log.exception("ZAP handler failed on a request (refused)")
        sock.close()
        with self._monitor_lock:
            new, self._new_monitors = self._new_monitors, []
        for mon in [*self._monitors, *(m for m, _ in new)]:
            mon.close(0)
        self._monitors.clear()

    def _refresh(self) -> None:
        for domain, lst in self.lists.items():
            before = lst.keys
            if lst.refresh() and before - lst.keys and self.on_revoke is not None:
                try:
                    self.on_revoke(domain)
                except Exception:
                    log.exception("revocation in %s failed", domain)

    def _answer(self, frames: list[bytes]) -> None:
        # ZAP 1.0 request: version, request id, domain, address, identity, mechanism, creds...
        if len(frames) < 6:
            return
        version, request_id, domain_b, address_b, _identity, mechanism = frames[:6]
        domain, address = domain_b.decode(errors="replace"), address_b.decode(errors="replace")
        key = zmq.utils.z85.encode(frames[6]) if mechanism == b"CURVE" and len(frames) > 6 \
            and len(frames[6]) == 32 else b""
        ok = version == b"1.0" and bool(key) and self.allowed(domain, key)
        self._count(domain, address, key, ok)
        if ok:
            self._sock.send_multipart([b"1.0", request_id, b"200", b"OK", key, b""])
        else:
            self._sock.send_multipart([b"1.0", request_id, b"400", b"key not allowed", b"", b""])

    def _count(self, domain: str, address: str, key: bytes, ok: bool) -> None:
        st = self.stats.get(domain)
        if st is None:
            st = self.stats.setdefault(domain, DomainStats())
        m = self.metrics
        if m is not None:
            m.child(m.auth, domain, "accepted" if ok else "refused").inc()
        if ok:
            st.accepted += 1
            log.debug("%s: accepted %s (key %s)", domain, address, key.decode())
            return
        st.refused += 1
        if address in st.refused_peers or len(st.refused_peers) < MAX_TRACKED_PEERS:
            st.refused_peers[address] = st.refused_peers.get(address, 0) + 1
        self.warn((domain, address), f"{domain}: refused {address}: key "
                  f"{key.decode() if key else '(none: not CURVE)'} is not in the allow-list")

    def warn(self, what: tuple[str, str], message: str) -> None:
        """Rate-limited warning: one per key per log interval, the rest counted."""
        now = time.monotonic()
        if len(self._last_log) >= MAX_TRACKED_PEERS and what not in self._last_log:
            self._last_log.clear()  # peer addresses are attacker-chosen: bound the memory
        last, suppressed = self._last_log.get(what, (-1e18, 0))
        if now - last >= self.log_interval_s:
            extra = f" ({suppressed} more since last report)" if suppressed else ""
            log.warning("%s%s", message, extra)
            self._last_log[what] = (now, 0)
        else:
            self._last_log[what] = (last, suppressed + 1)

    def revoked_message(self, domain: str, key: str, address: str) -> None:
        st = self.stats[domain]
        st.revoked_messages += 1
        if self.metrics is not None:
            self.metrics.child(self.metrics.auth, domain, "revoked").inc()
        self.warn((domain, "revoked:" + address), f"{domain}: dropped a message from {address}: "
                  f"key {key} is no longer in the allow-list")

    def status(self) -> dict[str, Any]:
        return {d: {"accepted": s.accepted, "refused": s.refused, "no_curve": s.no_curve,
                    "revoked_messages": s.revoked_messages,
                    "keys": len(self.lists[d].keys) if d in self.lists else 0,
                    "refused_peers": dict(list(s.refused_peers.items())[:50])}
                for d, s in self.stats.items()}

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)


class Transport:
    """The hub's transport security, from HubConfig: CURVE (default) or plaintext."""

    def __init__(self, cfg: Any, ctx: zmq.Context, metrics: Any) -> None:
        self.plaintext = bool(cfg.plaintext)
        self.secret: bytes = b""
        self.public: bytes = b""
        self.auth: Authenticator | None = None
        if self.plaintext:
            log.warning("transport: PLAINTEXT (plaintext: true): sensors and subscribers are "
                        "neither encrypted nor authenticated")
            return
        if not cfg.curve_secret_key_file:
            raise ValueError("curve_secret_key_file: required (or set plaintext: true); make "
                             "one with `threatseer keys gen --type curve`")
        if not cfg.curve_allow_list:
            raise ValueError("curve_allow_list: required (sensor public keys), or set "
                             "plaintext: true")
        self.secret = read_key(cfg.curve_secret_key_file, "curve_secret_key_file")
        self.public = zmq.curve_public(self.secret)
        lists = {INGEST: AllowList(cfg.curve_allow_list)}
        lists[PUBLISH] = AllowList(cfg.curve_subscriber_allow_list or os.devnull)
        self.auth = Authenticator(ctx, lists, metrics)

    def reload(self, cfg: Any) -> None:
        """Take the allow-list paths of ``cfg`` (SIGHUP): a list whose path changed is read
        from its new place now (keys it drops are revoked as on any edit)."""
        if self.auth is None:
            return
        paths = {INGEST: cfg.curve_allow_list, PUBLISH: cfg.curve_subscriber_allow_list
                 or os.devnull}
        for domain, path in paths.items():
            old = self.auth.lists.get(domain)
            if old is not None and old.path == path:
                old.refresh()
                continue
            self.auth.lists[domain] = new = AllowList(path)  # one store: the ZAP thread's
            if old is not None and old.keys - new.keys and self.auth.on_revoke is not None:
                self.auth.on_revoke(domain)
            log.info("allow-list for %s: now %s (%d keys)", domain, path, len(new.keys))

    def secure(self, sock: zmq.Socket, domain: str) -> None:
        """Make ``sock`` (before bind) a CURVE server in ZAP ``domain``, its failed
        handshakes counted; no-op in plaintext."""
        if self.plaintext:
            return
        curve_server(sock, self.secret, domain)
        if self.auth is not None:
            self.auth.watch(sock, domain)

    def close(self) -> None:
        if self.auth is not None:
            self.auth.close()
