"""``threatseer tap``: subscribe to a hub's PUB socket and print the scored events.

The message format is documented in docs/tap.md (and defined in hub/publish.py); what to
show is an :class:`~threatseer.hub.event_filter.EventFilter`.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TextIO

import click
import zmq

from threatseer.common import ecs
from threatseer.common.keys import curve_client
from threatseer.hub import publish
from threatseer.hub.event_filter import EventFilter


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
    rules = ", ".join(f"{i.get('rule')}({_signed(i.get('score'))})"
                      for i in ev.get("threatseer.indicators") or () if isinstance(i, dict))
    line = f"{ev.get('event.risk_score', 0):>5} {publish.topic_of(ev):<28} {host} {who} {what}"
    return f"{line}  [{rules}]" if rules else line


def _signed(score: Any) -> str:
    return f"{score:+d}" if isinstance(score, int) else str(score)


def timestamp(ev: dict[str, Any]) -> str:
    """The event's ``@timestamp`` as ISO 8601 UTC to the millisecond (the sensor's clock);
    the hub's receive time is not in the event, so "-" when the sensor sent none."""
    ts = ev.get("@timestamp")
    if not isinstance(ts, str) or not ts:
        return "-" * 24
    try:
        when = datetime.fromisoformat(ts.replace("Z", "+00:00")).astimezone(UTC)
    except ValueError:
        return ts
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


def text_line(ev: dict[str, Any]) -> str:
    """What ``tap`` prints for one event without --json: its time, then :func:`summary`."""
    return f"{timestamp(ev)} {summary(ev)}"


def colour(score: int, alert: bool) -> str | None:
    if alert:
        return "red"
    if isinstance(score, int | float) and score > 0:
        return "yellow"
    return None


def use_colour(choice: str, out: TextIO) -> bool:
    """``--color``: always, never, or auto = a terminal and no ``NO_COLOR`` (https://no-color.org:
    set and not empty disables colour; an explicit ``--color always`` still wins)."""
    if choice == "always":
        return True
    if choice == "never":
        return False
    isatty = getattr(out, "isatty", None)
    return bool(isatty and isatty()) and not os.environ.get("NO_COLOR")


def connect(endpoint: str, topics: tuple[str, ...],
            curve: tuple[bytes, bytes] | None = None,
            ctx: zmq.Context | None = None) -> zmq.Socket:
    """A SUB socket connected to ``endpoint`` with the topic prefixes subscribed.

    ``curve`` is ``(our secret key, the hub's public key)`` (Z85); None = plaintext hub. A
    malformed endpoint raises ``ValueError`` naming it.
    """
    ctx = ctx or zmq.Context.instance()
    sock = ctx.socket(zmq.SUB)
    if curve is not None:
        curve_client(sock, *curve)
    sock.setsockopt(zmq.RCVHWM, 100_000)
    for t in topics or ("",):
        sock.setsockopt(zmq.SUBSCRIBE, t.encode())
    try:
        sock.connect(endpoint)
    except zmq.ZMQError as exc:
        sock.close(linger=0)
        raise ValueError(f"{exc.strerror} (expected e.g. tcp://hub:5556)") from None
    return sock


def run_tap(endpoint: str, topics: tuple[str, ...], want: EventFilter, as_json: bool,
            count: int | None, out: TextIO = sys.stdout,
            on_ready: Callable[[], None] | None = None,
            curve: tuple[bytes, bytes] | None = None, colour_choice: str = "auto") -> int:
    """Print the events ``want`` selects until ``count`` were shown (or forever); return how
    many were. The hub must have our public key in its curve_subscriber_allow_list."""
    ctx = zmq.Context()
    try:
        sock = connect(endpoint, topics, curve, ctx)
    except BaseException:
        ctx.term()
        raise
    coloured = use_colour(colour_choice, out)
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
                if not isinstance(ev, dict) or not want.matches(ev):
                    continue
                if as_json:
                    out.write(ecs.to_json(ev) + "\n")
                else:
                    out.write(_styled(ev, coloured) + "\n")
                shown += 1
            out.flush()
    finally:
        sock.close(linger=0)
        ctx.term()
    return shown


def _styled(ev: dict[str, Any], coloured: bool) -> str:
    if not coloured:
        return text_line(ev)
    fg = colour(ev.get("event.risk_score", 0), ev.get("event.kind") == "alert")
    body = summary(ev)
    return (click.style(timestamp(ev), dim=True) + " "
            + (click.style(body, fg=fg, bold=fg == "red") if fg else body))
