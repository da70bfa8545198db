"""Running the console: one asyncio loop holding the web server, the feed (the hub's PUB
stream, or in the hub's own console process its tap) and the housekeeping (forgetting old
processes) together; ``threatseer console`` and the hub's console process both run this."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import ssl
import time
from collections.abc import Callable
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
    """One console. ``endpoint`` is the hub's PUB endpoint to subscribe to (``curve``:
    ``(our secret key, the hub's public key)`` for a CURVE hub), or with ``tap`` the private
    endpoint the hub hands its messages to (:mod:`.child`). ``on_ready(url)`` is called once
    it serves."""

    def __init__(self, cfg: ConsoleConfig, endpoint: str, sources: Sources,
                 curve: tuple[bytes, bytes] | None = None, tap: bool = False,
                 on_ready: Callable[[str], None] | None = None) -> None:
        self.cfg = cfg
        self.endpoint = endpoint
        self.sources = sources
        self.curve = curve
        self.tap = tap
        self.on_ready = on_ready
        self.state = ConsoleState(cfg)
        self.tokens = Tokens(cfg.viewer_tokens, cfg.admin_tokens)
        self.url = ""
        self.port = 0
        self._stop: asyncio.Event | None = None
        self.feed: Feed | None = None

    def run(self) -> None:
        """Serve until SIGINT/SIGTERM; raises what kept it from serving (e.g. the port)."""
        async def main() -> None:
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, self.stop_soon)
            await self.serve()

        asyncio.run(main())

    def stop_soon(self) -> None:
        if self._stop is not None:
            self._stop.set()

    async def serve(self) -> None:
        self._stop = asyncio.Event()
        actx = zmq.asyncio.Context()
        self.feed = Feed(actx, self.endpoint, self.state, self.curve, tap=self.tap)
        web_app = ConsoleApp(self.state, self.tokens, self.sources, self.feed)
        runner = web.AppRunner(web_app.app(), access_log=None, handle_signals=False,
                               shutdown_timeout=2.0)
        tasks: list[asyncio.Future[Any]] = []
        try:
            self.feed.open()
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
            if self.on_ready is not None:
                self.on_ready(self.url)
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
            actx.term()

    async def _housekeeping(self) -> None:
        while True:
            await asyncio.sleep(HOUSEKEEPING_S)
            self.state.tree.expire(time.time())
