"""``threatseer tap``: subscribe to a hub's PUB socket and print the scored events."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, TextIO

import click
import zmq

from threatseer.common import ecs
from threatseer.common.keys import curve_client
from threatseer.hub import publish


def summary(ev: dict[str, Any]) -> str:
    """One readable line: score, topic, who did what, and the indicators that fired."""
    action = ev.get("event.action", "?")
    what = (ev.get("process.command_line") or ev.get("file.path") or ev.get("dns.question.name")
            or "")
    if action in ("connect", "accept", "listen"):
        what = f"{ev.get('source.ip', '')} -> {ev.get('destination.ip', '')}:" \
               f"{ev.get('destination.port', '')}"
    who = ev.get("process.executable") or ev.get("process.name") or ev.get("container.id") or ""
    host = ev.get("host.name") or ev.get("agent.id") or ""
    rules = ", ".join(f"{i.get('rule')}({i.get('score'):+d})"
                      for i in ev.get("threatseer.indicators") or ())
    line = f"{ev.get('event.risk_score', 0):>5} {publish.topic_of(ev):<28} {host} {who} {what}"
    return f"{line}  [{rules}]" if rules else line


def colour(score: int, alert: bool) -> str | None:
    if alert:
        return "red"
    if score > 0:
        return "yellow"
    return None


def run_tap(endpoint: str, topics: tuple[str, ...], min_score: int | None, as_json: bool,
            count: int | None, out: TextIO = sys.stdout,
            on_ready: Callable[[], None] | None = None,
            curve: tuple[bytes, bytes] | None = None) -> int:
    """``curve`` is ``(our secret key, the hub's public key)`` (Z85); None = plaintext hub.
    The hub must have our public key in its curve_subscriber_allow_list."""
    ctx = zmq.Context()
    sock = ctx.socket(zmq.SUB)
    if curve is not None:
        curve_client(sock, *curve)
    sock.setsockopt(zmq.RCVHWM, 100_000)
    for t in topics or ("",):
        sock.setsockopt(zmq.SUBSCRIBE, t.encode())
    sock.connect(endpoint)
    tty = out.isatty()
    shown = 0
    if on_ready:
        on_ready()
    try:
        while count is None or shown < count:
            frames = sock.recv_multipart()
            if len(frames) != 2:
                continue
            try:
                _topic, events = publish.decode(frames)
            except Exception:
                continue
            for ev in events:
                if count is not None and shown >= count:
                    break
                if not isinstance(ev, dict):
                    continue
                score = ev.get("event.risk_score", 0)
                if min_score is not None and (not isinstance(score, int) or score < min_score):
                    continue
                if as_json:
                    out.write(ecs.to_json(ev) + "\n")
                else:
                    line = summary(ev)
                    fg = colour(score, ev.get("event.kind") == "alert") if tty else None
                    out.write((click.style(line, fg=fg) if fg else line) + "\n")
                shown += 1
            out.flush()
    finally:
        sock.close(linger=0)
        ctx.term()
    return shown
