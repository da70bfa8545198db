"""A token bucket for actions with consequences (kills): the sensor limits what it carries out
and the hub what it asks of each sensor, with the same rule."""

from __future__ import annotations

import time


class RateLimit:
    """At most ``per_minute`` actions a minute (a token bucket, full at start); 0: none."""

    def __init__(self, per_minute: int) -> None:
        self.per_minute = per_minute
        self.tokens = float(per_minute)
        self.at = time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(float(self.per_minute),
                          self.tokens + (now - self.at) * self.per_minute / 60.0)
        self.at = now
        if self.tokens < 1.0:
            return False
        self.tokens -= 1.0
        return True
