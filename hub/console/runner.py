"""Running the console: on its own thread in the hub, or in the foreground for
``threatseer console``. Both run one asyncio loop holding the web server, the PUB
subscription and the housekeeping (forgetting old processes) together."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import ssl
import threading
from typing import Any

import zmq
import zmq.asyncio
from aiohttp import web

from threatseer.hub.console.config import ConsoleConfig, split_listen
from threatseer.hub.console.feed import Feed
from threatseer.hub.console.server import ConsoleApp, Sources
from threatseer.hub.console.state import ConsoleState
from threatseer.hub.console.tokens import Tokens

log = logging.getLogger("threatseer.hub.console")
HOUSEKEEPING_S = 5.0


def tls_context(cfg: ConsoleConfig) -> ssl.SSLContext | None:
    if not cfg.tls_cert_file:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cfg.tls_cert_file, cfg.tls_key_file)
    return ctx


class Console:
    """One console. ``endpoint`` is the hub's PUB endpoint (``inproc://`` inside the hub,
    then ``zmq_ctx`` must be the hub's context); ``curve`` is ``(our secret key, the hub's
    public key)`` for a CURVE hub."""

    def __init__(self, cfg: ConsoleConfig, endpoint: str, sources: Sources,
                 zmq_ctx: zmq.Context | None = None,
                 curve: tuple[bytes, bytes] | None = None) -> None:
        self.cfg = cfg
        self.endpoint = endpoint
        self.sources = sources
        self.curve = curve
        self._zmq_ctx = zmq_ctx
        self.state = ConsoleState(cfg)
        self.tokens = Tokens(cfg.viewer_tokens, cfg.admin_tokens)
        self.url = ""
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None
        self.feed: Feed | None = None

    # -- in the hub --------------------------------------------------------------------------
    def start(self, timeout: float = 10.0) -> None:
        """Serve on a thread; returns once listening (raises what kept it from it)."""
        self._thread = threading.Thread(target=self._thread_main, name="hub-console",
                                        daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise RuntimeError("console did not start in time")
        if self._error is not None:
            self._thread.join(timeout)
            raise self._error

    def stop(self, timeout: float = 10.0) -> None:
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # loop already finished
                loop.call_soon_threadsafe(stop.set)
        if self._thread is not None:
            self._thread.join(timeout)

    def _thread_main(self) -> None:
        try:
            asyncio.run(self.serve())
        except BaseException as exc:  # reported to start() if it happens before ready
            if not self._ready.is_set():
                self._error = exc
                self._ready.set()
            else:
                log.exception("console stopped on an error")

    # -- in the foreground -------------------------------------------------------------------
    def run(self) -> None:
        """Serve until SIGINT/SIGTERM (``threatseer console``)."""
        async def main() -> None:
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, lambda: self._stop.set() if self._stop else None)
            await self.serve()

        asyncio.run(main())

    # -- both ----------------------------------------------------------------------------------
    async def serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        actx = (zmq.asyncio.Context.shadow(self._zmq_ctx.underlying) if self._zmq_ctx
                else zmq.asyncio.Context())
        own_ctx = self._zmq_ctx is None
        self.feed = Feed(actx, self.endpoint, self.state, self.curve)
        self.feed.open()
        web_app = ConsoleApp(self.state, self.tokens, self.sources, self.feed)
        runner = web.AppRunner(web_app.app(), access_log=None, handle_signals=False,
                               shutdown_timeout=2.0)
        tasks: list[asyncio.Future[Any]] = []
        try:
            await runner.setup()
            host, port = split_listen(self.cfg.listen)
            tls = tls_context(self.cfg)
            site = web.TCPSite(runner, host, port, ssl_context=tls)
            await site.start()
            bound = runner.addresses[0]
            self.port = bound[1]
            shown = f"[{bound[0]}]" if ":" in bound[0] else bound[0]
            self.url = f"{'https' if tls else 'http'}://{shown}:{self.port}/"
            log.info("console: %s (hub stream %s)", self.url, self.endpoint)
            tasks = [asyncio.ensure_future(self.feed.run()),
                     asyncio.ensure_future(self._housekeeping())]
            self._ready.set()
            stop = asyncio.ensure_future(self._stop.wait())
            done, _ = await asyncio.wait([stop, *tasks], return_when=asyncio.FIRST_COMPLETED)
            for t in done:
                if t is not stop and t.exception() is not None:
                    log.error("console: %s", t.exception())
        finally:
            for t in tasks:
                t.cancel()
            for t in tasks:
                with contextlib.suppress(BaseException):
                    await t
            self.feed.close()
            await runner.cleanup()
            if own_ctx:
                actx.term()

    async def _housekeeping(self) -> None:
        import time

        while True:
            await asyncio.sleep(HOUSEKEEPING_S)
            self.state.tree.expire(time.time())
