"""Where a sensor's batches go: a hub over ZeroMQ DEALER (CURVE), or JSON lines on stdout.

Sending must never stall the ring-buffer reader: every batch goes to the on-disk spool
(:mod:`threatseer.sensor.spool`) first, and the DEALER socket is used without blocking, at most
``window`` unacknowledged batches in flight. The hub acknowledges on the same connection once a
batch is durably scored; acknowledged batches leave the spool. No acknowledgement progress for
``resend_after_s`` (a hub restart, a lost connection) means go back and resend everything
unacknowledged, oldest first; the hub drops what it already has. A slow or absent hub only
fills the spool; at its bound the oldest batches go and are counted (``dropped_events``, in the
next health event). See docs/transport.md.

Failover: given several endpoints (the gateways of a hub cluster, docs/cluster.md), the sensor
sends to one at a time; when a go-back is due (no ack progress for ``resend_after_s`` with
something pending) it moves to the next endpoint and resends everything unacknowledged there.
One endpoint at a time, not all at once: a sensor's batches then enter the cluster in order
through one gateway, and a resend's copies of what the old gateway had already passed on are
dropped by the scorers by (sensor, epoch, seq).
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import struct
import sys
import time
from typing import Any, TextIO

import zmq

from threatseer.common import ecs, wire
from threatseer.common.keys import curve_client, public_of, read_key
from threatseer.sensor.spool import SPOOL_FILE, Spool

Event = dict[str, Any]
log = logging.getLogger("threatseer.sensor.ship")
MAX_PENDING_COMMANDS = 1024
# Bytes of (compressed) bodies sent and not yet acknowledged, at most (besides the window's
# batch count): ZeroMQ holds a copy of each until it is on the wire, and a hub slow to
# acknowledge let a whole window of a flood's bodies (~4 MiB) pile up there, the sensor's
# peak RSS. A hub that keeps up acknowledges every 16 batches or 256 KiB at once (hub/acks.py).
INFLIGHT_MAX_BYTES = 1 << 20


def _monitor_event(frames: list[bytes]) -> int:
    """The event id of a ZeroMQ socket-monitor message (libzmq 4: frame 1 starts with a
    16-bit event id and a 32-bit value). Parsed here, not with ``zmq.utils.monitor``, which
    imports asyncio: ~9 MiB of the sensor's RSS for one struct.unpack."""
    return struct.unpack_from("=H", frames[0])[0] if frames and len(frames[0]) >= 2 else 0


class StdoutSink:
    """``--stdout``: one nested ECS JSON document per line."""

    def __init__(self, identity: dict[str, Any] | None = None,
                 stream: TextIO | None = None) -> None:
        self.identity = identity or {}
        self.stream = stream or sys.stdout
        self.sent_events = 0
        self.dropped_events = 0
        self.pending = 0

    def send(self, events: list[Event]) -> None:
        write = self.stream.write
        identity = self.identity
        for ev in events:
            write(ecs.to_json({**identity, **ev}))
            write("\n")
        self.stream.flush()
        self.sent_events += len(events)

    def flush(self, timeout_s: float = 0) -> None:
        self.stream.flush()

    def fds(self) -> list[int]:
        return []

    def take_commands(self) -> list[Any]:
        return []

    def due_in(self, now: float) -> float | None:
        return None

    def service(self) -> None:
        pass

    def close(self, timeout_s: float = 0) -> None:
        self.flush()


class HubSink:
    """DEALER of wire batches to a hub, spooled until acknowledged (see the module doc).

    ``curve`` is ``(secret key, server public key)`` in Z85, or None for plaintext.
    ``endpoint`` is one endpoint or a list to fail over along (see the module doc).
    """

    def __init__(
        self, endpoint: str | list[str], sensor_id: str, host: str, *, spool: Spool,
        identity: dict[str, Any] | None = None, curve: tuple[bytes, bytes] | None = None,
        window: int = 64, resend_after_s: float = 5.0, hwm: int = 1000,
        context: zmq.Context | None = None,
    ) -> None:
        self.sensor_id = sensor_id
        self.host = host
        self.identity = identity or {}
        self.spool = spool
        self.window = window
        self.resend_after_s = resend_after_s
        self.ctx = context or zmq.Context.instance()
        sock = self.sock = self.ctx.socket(zmq.DEALER)
        if curve is not None:
            curve_client(sock, *curve)
        sock.setsockopt(zmq.SNDHWM, max(hwm, window))
        sock.setsockopt(zmq.LINGER, 0)
        # Queue nothing on a pipe that is not connected: unsent batches stay in the spool.
        sock.setsockopt(zmq.IMMEDIATE, 1)
        sock.setsockopt(zmq.RECONNECT_IVL, 100)
        sock.setsockopt(zmq.RECONNECT_IVL_MAX, 2000)
        # Connection events, so that a refused key or a hub that speaks plaintext is logged
        # here too (once per change of state), not only on the hub.
        self._monitor = sock.get_monitor_socket(
            zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_HANDSHAKE_FAILED_AUTH
            | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
            | zmq.EVENT_DISCONNECTED)
        self.endpoints = [endpoint] if isinstance(endpoint, str) else list(endpoint)
        self.endpoint = self.endpoints[0]
        self.failovers = 0
        self.connected = False
        self.auth_failures = 0
        self._last_failure = 0
        sock.connect(self.endpoint)
        self.acked = spool.first_seq - 1
        self.next_send = spool.first_seq
        self._progress_at = time.monotonic()
        self.sent_events = 0  # acknowledged by the hub
        self.sent_batches = 0  # handed to ZeroMQ (resends included)
        self.resends = 0
        self.bad_acks = 0
        self.commands: list[wire.Command] = []  # from the hub, not yet carried out
        self._scratch = bytearray()  # each batch's uncompressed body (wire.encode_body)

    @property
    def pending(self) -> int:
        """Batches not yet acknowledged (in the spool)."""
        return self.spool.count

    @property
    def dropped_events(self) -> int:
        return self.spool.dropped_events

    @property
    def epoch(self) -> int:
        return self.spool.epoch

    def take_commands(self) -> list[wire.Command]:
        """Commands the hub sent (kills, exec policies), in order; each is taken once."""
        out, self.commands = self.commands, []
        return out

    def fds(self) -> list[int]:
        """File descriptors to wait on beside the ring buffer: readable when the hub replied
        or the connection changed; then call :meth:`service`. (ZeroMQ's ZMQ_FD: a send can
        take a reply's notification, so :meth:`send` reads replies itself.)"""
        return [self.sock.get(zmq.FD), self._monitor.get(zmq.FD)]

    def due_in(self, now: float) -> float | None:
        """Seconds until :meth:`service` has a resend to consider; None without pending
        batches (acks and connection events wake the caller through :meth:`fds`)."""
        if not self.spool.count:
            return None
        return max(0.0, self._progress_at + self.resend_after_s - now)

    def send(self, events: list[Event]) -> None:
        # Compressed once, here: the spool, CURVE and the network all carry the small form.
        self.spool.append(wire.event_count(events),
                          wire.encode_body(events, compress=True, scratch=self._scratch))
        self._pump(time.monotonic())
        if self._read_acks():
            # acks read here do not wake the loop (ZMQ_FD is edge-triggered): send what they
            # let go now, not at the next send (batches held by the bytes bound, the window)
            self._pump(time.monotonic())

    def service(self) -> None:
        """Read connection events and the hub's replies, then send what the window allows.
        Never blocks."""
        self._read_monitor()
        self._read_acks()
        self._pump(time.monotonic())

    def _read_acks(self) -> bool:
        """Read the hub's replies; whether an ack moved the window."""
        sock, spool = self.sock, self.spool
        moved = False
        # Ask ZMQ_EVENTS first: a recv that finds nothing raises zmq.Again, and building that
        # exception at every turn of the loop cost more than reading the acks.
        while sock.get(zmq.EVENTS) & zmq.POLLIN:
            try:
                frames = sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return moved
            try:
                reply = wire.decode_reply(frames[-1])
            except wire.WireError as exc:
                self.bad_acks += 1
                log.warning("bad reply from the hub ignored: %s", exc)
                continue
            if not isinstance(reply, tuple):  # a command: the daemon carries it out
                if len(self.commands) < MAX_PENDING_COMMANDS:
                    self.commands.append(reply)
                else:
                    log.error("command from the hub dropped: %d commands pending",
                              len(self.commands))
                continue
            epoch, seq = reply
            if epoch != spool.epoch or seq <= self.acked or seq >= spool.next_seq:
                continue
            self.sent_events += spool.ack(seq)
            self.acked = seq
            self._progress_at = time.monotonic()
            moved = True
        return moved

    def _read_monitor(self) -> None:
        mon = self._monitor
        while mon.get(zmq.EVENTS) & zmq.POLLIN:
            event = _monitor_event(mon.recv_multipart())
            if event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                if not self.connected:
                    log.info("connected to the hub at %s", self.endpoint)
                self.connected = True
                self._last_failure = 0
            elif event == zmq.EVENT_DISCONNECTED:
                if self.connected:
                    log.warning("hub at %s disconnected: spooling", self.endpoint)
                self.connected = False
            else:
                self.auth_failures += 1
                if event != self._last_failure:
                    log.error("hub at %s refused the connection (%s): is this sensor's public "
                              "key in its curve_allow_list, curve_server_key right, plaintext "
                              "the same on both ends? Spooling meanwhile.", self.endpoint,
                              "authentication" if event == zmq.EVENT_HANDSHAKE_FAILED_AUTH
                              else "handshake")
                self._last_failure = event

    def flush(self, timeout_s: float = 0) -> None:
        """Read acks, then send what the window allows; never blocks beyond ``timeout_s``."""
        self.service()
        if timeout_s and self.spool.count:
            self.sock.poll(int(timeout_s * 1000), zmq.POLLIN)
            self._read_acks()

    def _pump(self, now: float) -> None:
        """Send what the window allows (and go back after ``resend_after_s`` without ack
        progress)."""
        spool = self.spool
        if self.next_send <= self.acked:
            self.next_send = self.acked + 1
        if self.acked < spool.first_seq - 1:  # dropped at the spool bound: out of the window
            self.acked = spool.first_seq - 1
        if self.next_send < spool.first_seq:
            self.next_send = spool.first_seq
        stalled = now - self._progress_at >= self.resend_after_s
        if stalled and len(self.endpoints) > 1 and spool.count and (
                self.next_send > self.acked + 1 or not self.connected):
            self._fail_over()
        if self.next_send > self.acked + 1 and stalled:
            # No ack progress: the hub restarted or the connection lost batches. Go back.
            self.next_send = max(self.acked + 1, spool.first_seq)
            self._progress_at = now
            self.resends += 1
        base = spool.first_seq
        # bytes in flight (sent, not acknowledged): the oldest entries of the spool's sizes
        inflight = 0
        if self.next_send > spool.first_seq:
            for _, _, nbytes in itertools.islice(spool.sizes, self.next_send - spool.first_seq):
                inflight += nbytes
        while (self.next_send < spool.next_seq and self.next_send - self.acked <= self.window
               and (inflight < INFLIGHT_MAX_BYTES or self.next_send == self.acked + 1)):
            seq = self.next_send
            stored = spool.get(seq)
            if stored is None:  # dropped meanwhile
                self.next_send = spool.first_seq
                continue
            count, body = stored
            header = wire.encode_header(
                wire.Batch(self.sensor_id, seq, [], host=self.host, common=self.identity,
                           epoch=spool.epoch, base=base, dropped=spool.dropped_total), count,
                compressed=wire.is_compressed(body))
            try:
                self.sock.send_multipart((header, body), flags=zmq.NOBLOCK)
            except zmq.Again:
                break
            if self.next_send == self.acked + 1:
                self._progress_at = max(self._progress_at, now)
            self.next_send += 1
            inflight += len(body)
            self.sent_batches += 1

    def _fail_over(self) -> None:
        """Move to the next endpoint; the caller's go-back resends the unacknowledged."""
        old = self.endpoint
        self.endpoint = self.endpoints[(self.endpoints.index(old) + 1) % len(self.endpoints)]
        with contextlib.suppress(zmq.ZMQError):  # never connected: nothing to undo
            self.sock.disconnect(old)
        self.sock.connect(self.endpoint)
        self.connected = False
        self.failovers += 1
        self._progress_at = time.monotonic()  # the next endpoint gets its resend_after_s
        log.warning("no acknowledgement from %s for %.1f s: failing over to %s", old,
                    self.resend_after_s, self.endpoint)

    def drain(self, timeout_s: float) -> bool:
        """Keep sending and reading acks until the spool is empty or ``timeout_s`` passed."""
        deadline = time.monotonic() + timeout_s
        while self.spool.count and time.monotonic() < deadline:
            self.flush(min(0.05, max(0.0, deadline - time.monotonic())))
        return not self.spool.count

    def close(self, timeout_s: float = 5.0) -> None:
        """Wait up to ``timeout_s`` for the hub to acknowledge what is spooled, then close;
        what is left stays in the spool and is sent after the next start."""
        self.drain(timeout_s)
        if self.spool.count:
            log.info("%d batches (%d events) stay in the spool for the next start",
                     self.spool.count, self.spool.events)
        self.sock.disable_monitor()
        self._monitor.close(0)
        self.sock.close()
        self.spool.close()


def curve_from_config(cfg: Any) -> tuple[bytes, bytes] | None:
    """``(secret, server key)`` from a SensorConfig, None in plaintext mode (warned), or a
    ValueError naming the missing or bad key (secure by default: no keys, no start)."""
    if cfg.plaintext:
        log.warning("transport: PLAINTEXT to %s (plaintext: true): batches are neither "
                    "encrypted nor authenticated", cfg.hub)
        return None
    if not cfg.curve_secret_key_file:
        raise ValueError("curve_secret_key_file: required (or set plaintext: true); "
                         "make one with `threatseer keys gen --type curve`")
    if not cfg.curve_server_key:
        raise ValueError("curve_server_key: required (the hub's public key), or set "
                         "plaintext: true")
    secret = read_key(cfg.curve_secret_key_file, "curve_secret_key_file")
    if cfg.curve_public_key_file:
        public = read_key(cfg.curve_public_key_file, "curve_public_key_file")
        if public != public_of(secret):
            raise ValueError("curve_public_key_file: does not belong to curve_secret_key_file")
    return secret, read_key(cfg.curve_server_key, "curve_server_key")


def hub_sink_from_config(cfg: Any, sensor_id: str, host: str,
                         identity: dict[str, Any]) -> HubSink:
    """The HubSink a SensorConfig describes: spool under state_dir, CURVE unless plaintext."""
    curve = curve_from_config(cfg)
    spool = Spool(os.path.join(cfg.state_dir, SPOOL_FILE), cfg.spool_max_mib << 20,
                  memory_max_bytes=cfg.spool_memory_mib << 20)
    if spool.count:
        log.info("spool: resuming %d unacknowledged batches (%d events)", spool.count,
                 spool.events)
    return HubSink([cfg.hub, *cfg.failover], sensor_id, host, spool=spool, identity=identity,
                   curve=curve,
                   window=cfg.ack_window, resend_after_s=cfg.resend_after_s, hwm=cfg.send_hwm)
