"""The ingest's penalty box: a sender that has proven hostile is refused unread for a while.

Why: every malformed batch costs the pipeline a receive, a header decode, often an LZ4
decompression, a body split and a schema check (0.1-0.5 ms each, up to a few ms for a
decompression bomb), on the one thread that also scores and acknowledges every other sensor.
A sensor key flooding thousands of them a second took half a core and made a well-behaved
sensor's ack p99 six times its quiet value. Once a sender has sent ``strikes`` malformed
batches within ``window_s``, its messages are refused for ``box_s`` right after they are read
(before the header is decoded): a dictionary lookup each, counted per sensor as the
``penalty-box`` reason, never scored, never acknowledged, so a sender that is merely broken
keeps them in its spool and sends them again after the box. The boxing itself is logged once.

A sender is its CURVE key (the one identity an attacker cannot change without another
allowed key); in plaintext mode, where nothing is authenticated, its connection.

What is a strike is the ingest's call (hub/ingest.py): a batch refused whole for its
framing, header, body, size, epoch or a spoofed id, and a batch (or a slice of
``CHUNK_EVENTS``) every event of which the schema refuses. Not a strike: a batch with good
events beside bad ones (one bad event never costs its neighbours; a flood of such batches is
a volume problem, bounded by the fair rounds), truncated or unknown fields (a newer sensor, a
long command line), a stale epoch (a restarted sensor's old spool), a batch the hub itself
failed to score.
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger("threatseer.hub.ingest")
# Senders tracked at once (their identities are peer-chosen in plaintext): when full, the
# ones whose window and box are over are forgotten first, then the oldest window.
MAX_TRACKED = 10_000


class PenaltyBox:
    """Strikes per sender in a fixed window, and the senders boxed until a deadline
    (monotonic seconds, passed in by the caller so a burst of messages reads the clock once).
    ``strikes`` 0 turns the box off."""

    def __init__(self, strikes: int, window_s: float, box_s: float) -> None:
        self.strikes = strikes
        self.window_s = window_s
        self.box_s = box_s
        self._windows: dict[Any, list[float]] = {}  # sender -> [window start, strikes]
        self._boxed: dict[Any, float] = {}  # sender -> boxed until
        self.boxings = 0  # times a sender was boxed (status)

    def boxed(self, sender: Any, now: float) -> bool:
        """Whether ``sender``'s messages are refused unread now."""
        until = self._boxed.get(sender)
        if until is None:
            return False
        if now < until:
            return True
        del self._boxed[sender]
        log.info("penalty box: %s may send again", describe(sender))
        return False

    def strike(self, sender: Any, now: float, why: str) -> bool:
        """One malformed batch of ``sender`` (``why``: its reason); True when it boxed it."""
        if not self.strikes or sender is None or sender in self._boxed:
            return False  # (boxed: a batch it sent before, taken before the boxing)
        window = self._windows.get(sender)
        if window is None or now - window[0] >= self.window_s:
            if window is None and len(self._windows) >= MAX_TRACKED:
                self._forget(now)
            window = self._windows[sender] = [now, 0]
        window[1] += 1
        if window[1] < self.strikes:
            return False
        del self._windows[sender]
        self._boxed[sender] = now + self.box_s
        self.boxings += 1
        log.warning("penalty box: %s sent %d malformed batches within %.0f s (last: %s): its "
                    "messages are refused unread for %.0f s (counted as penalty-box)",
                    describe(sender), self.strikes, self.window_s, why, self.box_s)
        return True

    def _forget(self, now: float) -> None:
        for sender in [s for s, (start, _n) in self._windows.items()
                       if now - start >= self.window_s]:
            del self._windows[sender]
        for sender in [s for s, until in self._boxed.items() if until <= now]:
            del self._boxed[sender]
        if len(self._windows) >= MAX_TRACKED:  # all within their window: the oldest go
            for sender in sorted(self._windows, key=lambda s: self._windows[s][0])[
                    :len(self._windows) // 2]:
                del self._windows[sender]

    def status(self) -> dict[str, Any]:
        return {"boxed": len(self._boxed), "boxings": self.boxings}


def describe(sender: Any) -> str:
    """A sender for a log line: its key, or its connection's routing id in plaintext."""
    if isinstance(sender, str):
        return f"key {sender}"
    return f"connection {bytes(sender).hex()}"
