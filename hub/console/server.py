"""The console's web side (aiohttp): the page, its JSON API and the live alert stream.

Why aiohttp: one well-kept library gives the HTTP server, streaming responses for
server-sent events and TLS, on one asyncio loop that also runs the ZeroMQ subscription
(pyzmq's asyncio sockets), so the console is one thread in the hub with no locks.

Routes (every ``/api/`` route needs ``Authorization: Bearer TOKEN``; the page and its two
static files do not, they hold no data):

    GET  /                          the page (static/index.html, app.js, app.css)
    GET  /api/session               who the token is (name, role) and this console's instance
    GET  /api/alerts                held alerts, newest first (filters: host, rule,
                                    min_score, kind; limit, before, after)
    GET  /api/alerts/{seq}          one alert: indicators, raw ECS document, process tree
    GET  /api/stream                server-sent events: the same filters, live; ``after``
                                    resumes after a reconnect
    GET  /api/health                sensors, outputs, bundle, per-minute counts, top rules
    GET  /api/profiles              profile subjects (``threatseer profiles list``)
    GET  /api/profiles/show         one profile (``?subject=``)
    POST /api/profiles/reset        ``{"subject": ...}``, admin role only
    POST /api/profiles/relearn      ``{"subject": ...}``, admin role only

The token is sent as a header by the page's own code (kept in the tab's sessionStorage),
never as a cookie: no other site can make a browser send it, so there is nothing to forge.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Any

from aiohttp import web

from threatseer.common import ecs
from threatseer.hub.console.alerts import AlertFilter, indicators
from threatseer.hub.console.state import ConsoleState, Listener, summary_json
from threatseer.hub.console.tokens import Identity, Tokens

log = logging.getLogger("threatseer.hub.console")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

IDENTITY = web.AppKey("identity", Identity)
CONSOLE = web.AppKey("console", object)
FLUSH_INTERVAL_S = 0.2  # a stream sends at most five times a second, whatever the rate
STATUS_INTERVAL_S = 2.0  # a stream's status line (hub stream up/down, held, last seq)
MAX_LIST = 1000
LISTENER_BACKLOG = 1000  # alerts resent to a stream that resumes after a reconnect
MAX_SUBJECT = 1024
FAILED_AUTH_LIMIT = 20  # failed tokens per client address and minute before 429
STATIC_FILES = {"/": ("index.html", "text/html; charset=utf-8"),
                "/static/app.js": ("app.js", "text/javascript; charset=utf-8"),
                "/static/app.css": ("app.css", "text/css; charset=utf-8"),
                "/static/favicon.svg": ("favicon.svg", "image/svg+xml")}
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
                               "img-src 'self' data:; connect-src 'self'; base-uri 'none'; "
                               "form-action 'self'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=json.dumps(data, separators=(",", ":"), default=str).encode(),
                        status=status, content_type="application/json",
                        headers={"Cache-Control": "no-store"})


def _error(status: int, message: str) -> web.Response:
    return _json({"error": message}, status)


def _int(q: Any, name: str, default: int | None, lo: int, hi: int) -> int | None:
    raw = q.get(name, "")
    if raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{name}: not an integer") from None
    return max(lo, min(hi, value))


def _sse(event: str, data: bytes, event_id: int | None = None) -> bytes:
    head = f"event: {event}\n" + (f"id: {event_id}\n" if event_id is not None else "")
    return head.encode() + b"data: " + data + b"\n\n"


class Throttle:
    """Failed authentications per client address and minute (bounded memory)."""

    def __init__(self, limit: int = FAILED_AUTH_LIMIT, max_clients: int = 10_000) -> None:
        self.limit = limit
        self.max_clients = max_clients
        self.failures: dict[str, tuple[int, int]] = {}  # address -> (minute, count)
        self.last_log: dict[str, float] = {}

    def blocked(self, address: str) -> bool:
        minute, count = self.failures.get(address, (0, 0))
        return minute == int(time.time() // 60) and count >= self.limit

    def fail(self, address: str) -> None:
        now_minute = int(time.time() // 60)
        if len(self.failures) >= self.max_clients and address not in self.failures:
            self.failures.clear()
            self.last_log.clear()
        minute, count = self.failures.get(address, (now_minute, 0))
        self.failures[address] = (now_minute, count + 1 if minute == now_minute else 1)
        if time.monotonic() - self.last_log.get(address, -1e18) >= 10:
            self.last_log[address] = time.monotonic()
            log.warning("console: refused a request from %s: missing or unknown token",
                        address)


class ConsoleApp:
    """The web application over a :class:`ConsoleState`; ``sources`` answers for the
    hub-side facts (status file, bundle store, profile database) where the console has them."""

    def __init__(self, state: ConsoleState, tokens: Tokens, sources: Any, feed: Any) -> None:
        self.state = state
        self.tokens = tokens
        self.sources = sources
        self.feed = feed
        self.throttle = Throttle()
        self.closing = asyncio.Event()
        self.static = self._load_static()

    @staticmethod
    def _load_static() -> dict[str, tuple[bytes, str, str]]:
        """The page's files, read once: ``path -> (body, content type, etag)``."""
        import hashlib

        folder = resources.files("threatseer.hub.console") / "static"
        out = {}
        for path, (name, ctype) in STATIC_FILES.items():
            body = (folder / name).read_bytes()
            out[path] = (body, ctype, '"' + hashlib.sha256(body).hexdigest()[:16] + '"')
        return out

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._headers, self._auth],
                              client_max_size=64 * 1024)
        app[CONSOLE] = self
        app.router.add_get("/", self.page)
        for path in STATIC_FILES:
            if path != "/":
                app.router.add_get(path, self.page)
        app.router.add_get("/api/session", self.session)
        app.router.add_get("/api/alerts", self.alerts)
        app.router.add_get("/api/alerts/{seq}", self.alert)
        app.router.add_get("/api/stream", self.stream)
        app.router.add_get("/api/health", self.health)
        app.router.add_get("/api/profiles", self.profiles)
        app.router.add_get("/api/profiles/show", self.profile_show)
        app.router.add_post("/api/profiles/{op:reset|relearn}", self.profile_change)
        app.on_shutdown.append(self._on_shutdown)
        return app

    async def _on_shutdown(self, _app: web.Application) -> None:
        self.closing.set()

    # -- middleware -------------------------------------------------------------------------
    @web.middleware
    async def _headers(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            resp = await handler(request)
        except web.HTTPException as exc:
            resp = exc
        for k, v in SECURITY_HEADERS.items():
            resp.headers.setdefault(k, v)
        return resp

    @web.middleware
    async def _auth(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if not request.path.startswith("/api/"):
            return await handler(request)
        address = request.remote or "?"
        if self.throttle.blocked(address):
            return _error(429, "too many refused tokens from this address: wait a minute")
        auth = request.headers.get("Authorization", "")
        scheme, _, token = auth.partition(" ")
        ident = self.tokens.identify(token.strip()) if scheme.lower() == "bearer" else None
        if ident is None:
            self.throttle.fail(address)
            return _error(401, "a valid console token is needed (Authorization: Bearer ...)")
        request[IDENTITY] = ident
        try:
            return await handler(request)
        except ValueError as exc:  # a bad query parameter: say which
            return _error(400, str(exc))

    # -- handlers ---------------------------------------------------------------------------
    async def page(self, request: web.Request) -> web.StreamResponse:
        body, ctype, etag = self.static[request.path]
        headers = {"ETag": etag, "Cache-Control": "no-cache"}
        if request.headers.get("If-None-Match") == etag:
            return web.Response(status=304, headers=headers)
        return web.Response(body=body, headers={**headers, "Content-Type": ctype})

    async def session(self, request: web.Request) -> web.StreamResponse:
        ident = request[IDENTITY]
        return _json({"name": ident.name, "role": ident.role, "instance": self.state.instance,
                      "started": self.state.started, "mode": self.sources.mode,
                      "profiles": self.sources.profile_db is not None})

    async def alerts(self, request: web.Request) -> web.StreamResponse:
        q = request.query
        flt = AlertFilter.from_query(q)
        limit = _int(q, "limit", 300, 1, MAX_LIST)
        before = _int(q, "before", None, 0, 2**62)
        after = _int(q, "after", 0, 0, 2**62)
        found = self.state.alerts.newest(flt, limit or 300, before, after or 0)
        body = b"".join([
            b'{"instance":', json.dumps(self.state.instance).encode(),
            b',"last_seq":', str(self.state.alerts.last_seq).encode(),
            b',"held":', str(len(self.state.alerts)).encode(),
            b',"alerts":[', b",".join(summary_json(h) for h in found), b"]}"])
        return web.Response(body=body, content_type="application/json",
                            headers={"Cache-Control": "no-store"})

    async def alert(self, request: web.Request) -> web.StreamResponse:
        instance = request.query.get("instance")
        if instance and instance != self.state.instance:
            return _error(410, "this alert was held by an earlier run of the console (the hub "
                               "or console restarted): find it in the outputs")
        try:
            seq = int(request.match_info["seq"])
        except ValueError:
            return _error(400, "not an alert number")
        held = self.state.alerts.get(seq)
        if held is None:
            return _error(404, "no longer held (the console keeps the newest "
                               f"{self.state.alerts.size} alerts)")
        ev = held.event()
        summary = {k: v for k, v in held.summary.items() if k != "_json"}
        return _json({"instance": self.state.instance, "summary": summary,
                      "indicators": indicators(ev), "document": ecs.nest(ev),
                      "tree": self.state.tree.tree(ev, seq)})

    async def stream(self, request: web.Request) -> web.StreamResponse:
        q = request.query
        flt = AlertFilter.from_query(q)
        after = _int(q, "after", 0, 0, 2**62) or 0
        state = self.state
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                           "Cache-Control": "no-store",
                                           "X-Accel-Buffering": "no"})
        await resp.prepare(request)
        listener = Listener(flt)
        state.listeners.add(listener)
        try:
            hello = {"instance": state.instance, "last_seq": state.alerts.last_seq}
            await resp.write(_sse("hello", json.dumps(hello).encode()))
            if after and q.get("instance") == state.instance:  # resume: what was missed
                missed = state.alerts.newest(flt, LISTENER_BACKLOG, after=after)
                if missed:
                    missed.reverse()
                    await resp.write(_sse("alerts", b"[" + b",".join(
                        summary_json(h) for h in missed) + b"]", missed[-1].seq))
            next_status = 0.0
            while not self.closing.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(listener.wake.wait(), STATUS_INTERVAL_S)
                batch = listener.take()
                if batch:
                    await resp.write(_sse("alerts", b"[" + b",".join(
                        summary_json(h) for h in batch) + b"]", batch[-1].seq))
                now = time.monotonic()
                if now >= next_status:
                    next_status = now + STATUS_INTERVAL_S
                    await resp.write(_sse("status", json.dumps({
                        "feed": self.feed.status, "held": len(state.alerts),
                        "last_seq": state.alerts.last_seq, "dropped": listener.dropped,
                    }).encode()))
                await asyncio.sleep(FLUSH_INTERVAL_S)
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            state.listeners.discard(listener)
        return resp

    async def health(self, request: web.Request) -> web.StreamResponse:
        now = time.time()
        state = self.state
        loop = asyncio.get_running_loop()
        hub = await loop.run_in_executor(None, self.sources.hub_view)
        sensors = state.fleet.view(now)
        by_agent = {s["agent"]: s for s in sensors}
        for sid, s in (hub.get("sensors") or {}).items():
            entry = by_agent.get(sid)
            if entry is None:  # known to the hub, quiet on the stream
                entry = {"agent": sid, "host": s.get("host", ""), "version": "",
                         "last_seen": None, "events": 0, "alerts": 0, "rate": 0.0,
                         "lag_s": None, "loss_events": 0, "loss_batches": 0}
                sensors.append(entry)
                by_agent[sid] = entry
            entry["hub"] = s
        return _json({
            "now": now,
            "console": {"instance": state.instance, "started": state.started,
                        "mode": self.sources.mode, "feed": self.feed.view(),
                        "held": len(state.alerts), "alerts_kept": state.alerts.size,
                        "processes": len(state.tree.procs),
                        "processes_forgotten": state.tree.forgotten,
                        "streams": len(state.listeners), "bad_messages": state.bad_messages},
            "sensors": sensors,
            "outputs": hub.get("outputs"),
            "bundle": hub.get("bundle"),
            "hub": hub.get("hub"),
            "series": state.fleet.series(now),
            "top_rules": state.fleet.top_rules(now),
            "totals": {"events": state.fleet.events, "alerts": state.fleet.alerts},
        })

    # -- profiles ---------------------------------------------------------------------------
    async def profiles(self, request: web.Request) -> web.StreamResponse:
        return await self._profile_op(request, "list", None)

    async def profile_show(self, request: web.Request) -> web.StreamResponse:
        return await self._profile_op(request, "show", request.query.get("subject", ""))

    async def profile_change(self, request: web.Request) -> web.StreamResponse:
        ident = request[IDENTITY]
        op = request.match_info["op"]
        if not ident.admin:
            log.warning("console: %s (viewer) was refused profile %s", ident.name, op)
            return _error(403, f"profile {op} needs an admin token")
        if request.content_type != "application/json":
            return _error(415, "send JSON: {\"subject\": ...}")
        try:
            body = await request.json()
        except ValueError:
            return _error(400, "the body is not JSON")
        subject = body.get("subject") if isinstance(body, dict) else None
        if not isinstance(subject, str):
            return _error(400, "subject: a string is needed ('*' for every profile)")
        resp = await self._profile_op(request, op, subject)
        if resp.status == 200:
            log.warning("console: %s (admin) ran profile %s %r", ident.name, op, subject)
        return resp

    async def _profile_op(self, request: web.Request, op: str,
                          subject: str | None) -> web.StreamResponse:
        if subject is not None and not 0 < len(subject) <= MAX_SUBJECT:
            return _error(400, f"subject: 1 to {MAX_SUBJECT} characters")
        loop = asyncio.get_running_loop()
        try:
            result = await loop.run_in_executor(None, self.sources.profiles, op, subject)
        except LookupError as exc:
            return _error(404, str(exc))
        except Exception as exc:  # e.g. a locked or broken database: say so, keep serving
            log.warning("console: profiles %s failed: %s", op, exc)
            return _error(503, f"profiles {op} failed: {exc}")
        return _json(result)



class Sources:
    """What the hub side offers besides the stream: its status file, bundle store and
    profile database, each where the console can reach it (None: not available here)."""

    def __init__(self, mode: str, state_dir: str | None, profile_db: str | None,
                 bundle_store: Any = None) -> None:
        self.mode = mode
        self.state_dir = state_dir
        self.profile_db = profile_db
        self.bundle_store = bundle_store
        self._store_tried = bundle_store is not None

    def _store(self) -> Any:
        if not self._store_tried and self.state_dir:
            self._store_tried = True
            if os.path.isdir(os.path.join(self.state_dir, "bundles")):
                try:
                    from threatseer.hub.rules.store import BundleStore

                    self.bundle_store = BundleStore(self.state_dir)
                except Exception as exc:
                    log.warning("console: bundle store in %s unreadable: %s", self.state_dir,
                                exc)
        return self.bundle_store

    def hub_view(self) -> dict[str, Any]:
        """The hub's own figures (from its status file) and the bundle history."""
        from threatseer.hub.console.fleet import read_status

        if not self.state_dir:
            return {}
        status = read_status(self.state_dir) or {}
        bundle = dict(status.get("bundle") or {})
        store = self._store()
        if store is not None:
            try:
                bundle.update(store.history())
            except Exception as exc:
                bundle["history_error"] = str(exc)
        hub = {k: status.get(k) for k in ("pid", "started_at", "updated_at", "ingest",
                                          "publish", "emitted", "failures", "engine_errors",
                                          "profiles", "console")} if status else None
        if status:
            transport = status.get("transport") or {}
            hub["plaintext"] = transport.get("plaintext")
            hub["auth"] = {d: {k: v for k, v in s.items() if k != "refused_peers"}
                           for d, s in (transport.get("auth") or {}).items()}
        return {"sensors": status.get("sensors") or {}, "outputs": status.get("outputs"),
                "bundle": bundle or None, "hub": hub}

    def profiles(self, op: str, subject: str | None) -> Any:
        """``threatseer profiles`` list/show/reset/relearn on the hub's database."""
        if self.profile_db is None:
            raise LookupError("profiles are not available here: run the console in the hub "
                              "or give it the hub's config (-c) on the hub's host")
        if not os.path.exists(self.profile_db):
            raise LookupError(f"no profile database at {self.profile_db} (profiles off, or "
                              "the hub has not learned anything yet)")
        from threatseer.hub.profiles import ProfileStore

        store = ProfileStore(self.profile_db)
        try:
            if op == "list":
                return {"profiles": store.list()}
            assert subject is not None
            if op == "show":
                prof = store.show(subject)
                if prof is None:
                    raise LookupError(f"no profile {subject!r}")
                return prof
            n = store.reset(subject) if op == "reset" else store.relearn(subject)
            return {"op": op, "subject": subject, "profiles": n}
        finally:
            store.close()
