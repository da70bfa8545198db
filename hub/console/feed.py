"""The console's subscription to the hub's PUB stream (the tap's message format,
:mod:`threatseer.hub.publish`).

The hub's own console process (:mod:`.child`) binds a PAIR socket on a private ``ipc://``
path instead, to which the hub's publisher hands a copy of every message (no subscription to
wait for, and the publisher never waits for it). As ``threatseer console --hub`` it is a CURVE client
with its own key, like ``threatseer tap``: ZeroMQ reconnects by itself when the hub
restarts, and a socket monitor tells the console page whether the stream is up, down, or
refused (the key is not in ``curve_subscriber_allow_list``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

import zmq
import zmq.asyncio
from zmq.utils.monitor import parse_monitor_message

from threatseer.common.keys import curve_client
from threatseer.hub import publish
from threatseer.hub.console.state import ConsoleState

log = logging.getLogger("threatseer.hub.console")
RCVHWM = 100_000
YIELD_EVERY = 64  # messages taken before letting the web side run


class Feed:
    def __init__(self, ctx: zmq.asyncio.Context, endpoint: str, state: ConsoleState,
                 curve: tuple[bytes, bytes] | None = None, tap: bool = False) -> None:
        self.ctx = ctx
        self.endpoint = endpoint
        self.state = state
        self.curve = curve
        self.tap = tap
        self.status = "hub tap" if tap else "connecting"
        self.since = time.time()
        self.reconnects = 0
        self._sock: Any = None
        self._monitor: Any = None

    def view(self) -> dict[str, Any]:
        return {"endpoint": self.endpoint, "status": self.status, "since": self.since,
                "curve": self.curve is not None, "reconnects": self.reconnects,
                "messages": self.state.messages, "last_message": self.state.last_message}

    def open(self) -> None:
        """Create and connect the SUB socket, or bind the tap (before :meth:`run`, so nothing
        published from now on is missed)."""
        tap = self.tap
        sock = self.ctx.socket(zmq.PAIR if tap else zmq.SUB)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.RCVHWM, RCVHWM)
        if self.curve is not None:
            curve_client(sock, *self.curve)
        if not tap:
            sock.setsockopt(zmq.SUBSCRIBE, b"")
            self._monitor = sock.get_monitor_socket(
                zmq.EVENT_CONNECTED | zmq.EVENT_DISCONNECTED | zmq.EVENT_HANDSHAKE_SUCCEEDED
                | zmq.EVENT_HANDSHAKE_FAILED_AUTH | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
                | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL | zmq.EVENT_CONNECT_RETRIED)
        if tap:
            sock.bind(self.endpoint)
        else:
            sock.connect(self.endpoint)
        self._sock = sock

    async def run(self) -> None:
        if self._sock is None:
            self.open()
        tasks = [asyncio.ensure_future(self._receive())]
        if self._monitor is not None:
            tasks.append(asyncio.ensure_future(self._watch()))
        try:
            await asyncio.gather(*tasks)
        finally:
            for t in tasks:
                t.cancel()
            self.close()

    def close(self) -> None:
        if self._monitor is not None:
            with contextlib.suppress(zmq.ZMQError):
                self._sock.disable_monitor()
            self._monitor.close(linger=0)
            self._monitor = None
        if self._sock is not None:
            self._sock.close(linger=0)
            self._sock = None

    async def _receive(self) -> None:
        sock, ingest = self._sock, self.state.ingest
        taken = 0
        while True:
            frames = await sock.recv_multipart(copy=True)
            if len(frames) != 2:
                self.state.bad_messages += 1
                continue
            try:
                _topic, events = publish.decode(frames)
            except Exception:
                self.state.bad_messages += 1
                continue
            ingest(events, time.time())
            taken += 1
            if taken % YIELD_EVERY == 0:
                await asyncio.sleep(0)

    async def _watch(self) -> None:
        monitor = self._monitor
        while True:
            msg = parse_monitor_message(await monitor.recv_multipart())
            event = msg["event"]
            before = self.status
            if event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                self.status = "connected"
            elif event == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
                self.status = "refused: this console's key is not allowed by the hub"
            elif event in (zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL,
                           zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL):
                self.status = "refused: handshake failed (wrong server key, or CURVE on " \
                              "one side only)"
            elif event == zmq.EVENT_DISCONNECTED and not before.startswith("refused"):
                self.status = "disconnected: reconnecting"  # (a refusal stays until it passes)
            elif event == zmq.EVENT_CONNECTED and self.curve is None:
                self.status = "connected"
            if self.status != before:
                self.since = time.time()
                if self.status == "connected" and before.startswith("disconnected"):
                    self.reconnects += 1
                log.info("console: hub stream %s: %s", self.endpoint, self.status)
