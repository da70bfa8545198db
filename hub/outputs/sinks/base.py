"""What an output type implements; the worker does queueing, retries and counting around it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class SendResult:
    """How one ``send`` went: delivered, refused for good, and what to send again."""

    sent: int = 0
    failed: int = 0
    retry: list[dict[str, Any]] = field(default_factory=list)
    error: str = ""
    # The connection is suspect: disconnect and connect again before the retry.
    reconnect: bool = False
    # The server asked to wait this long before the retry (HTTP Retry-After), in seconds.
    retry_after: float = 0.0


class Sink:
    """One destination. ``send`` raises on a whole-batch failure (the worker retries it all)."""

    def connect(self) -> None:
        """Open the connection (or check the server answers); raise when it does not."""

    def send(self, events: list[dict[str, Any]]) -> SendResult:
        raise NotImplementedError

    def idle(self) -> None:
        """Called when no events came for a flush interval (flush buffers, poll callbacks)."""

    def disconnect(self) -> None:
        """Drop the connection after an error, so the next ``connect`` starts clean."""

    def close(self) -> None:
        """Final flush and release; called once by the worker as it stops."""
        self.disconnect()
