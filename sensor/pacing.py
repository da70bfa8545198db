"""When the sensor sends a batch: at once while the host is quiet, coalesced under load.

Every batch has a fixed cost whatever its size: on a 2-core VM ~0.3 ms of CPU for a wakeup
from idle, a spool write, ZeroMQ's I/O thread putting it on the wire, and its share of an
acknowledgement. Sending every event at once costs more than the events themselves past a
few hundred a second; holding every event for a fixed 200 ms made each alert wait.

So sends are paced by *credits*: a batch goes if a credit is left, at once unless it ends
with a fork or an exec, which waits until its first event is ``GATHER_S`` old (the fork, exec
and exit of a short command, which come a few hundred microseconds apart, travel together;
sensor/daemon.py BURST_STARTS); credits come back one per *interval* up to ``burst``. A quiet
host always finds one, so its events leave within ~2 ms after the kernel saw them. Under a
steady stream the credits run out and events wait for the next one, then go in the wakeup
that brings it.

The interval follows the event rate: ``max_interval_s`` (the config's ``batch_latency_ms``)
around ``FULL_HOLD_RATE`` events/s (within ``HOLD_BAND``), shorter with the square of the
distance below (at a few hundred events a second batches are few anyway, latency matters
more than their cost: 200/s gets the 7 ms floor at the default 100 ms) and above it (at 10,000 a second a batch
every 7 ms carries 70 events, enough to pay for itself), never below
``min_interval_s`` (7 ms: shorter, a flood woke the reader for a few hundred events at a time,
which cost more per event than reading them). At a thousand a second holding them
``max_interval_s`` (100 ms by default) keeps the sensor within its CPU budget (one batch per
100 ms instead of one per 2 ms; at 50 ms it took ~1.5% of a core). Whatever the interval,
once ``wakeup_bytes`` are pending the kernel wakes the reader and that batch goes at once.
"""

from __future__ import annotations

# A batch waits this long after its first event, so that a burst goes out as one batch.
GATHER_S = 0.002
# The event rate (per second) from which the interval is the longest.
FULL_HOLD_RATE = 1000.0
# The event rates (as shares of FULL_HOLD_RATE) between which the interval is the longest.
HOLD_BAND = (0.8, 1.25)
# How often the event rate is re-estimated (half the old estimate, half the last window).
RATE_WINDOW_S = 0.25


class SendPacer:
    """A token bucket of batch sends whose refill interval follows the event rate."""

    def __init__(self, min_interval_s: float, max_interval_s: float, burst: int,
                 now: float) -> None:
        self.min_interval_s = min_interval_s
        self.max_interval_s = max(min_interval_s, max_interval_s)
        self.burst = float(burst)
        self.credits = float(burst)
        self.rate = 0.0  # events per second, smoothed
        self._at = now
        self._window_start = now
        self._window_events = 0

    @property
    def interval_s(self) -> float:
        """The current refill interval: longest at FULL_HOLD_RATE, shorter below it (few
        batches anyway: latency first) and above it (batches big enough to carry their
        cost: latency first again)."""
        r = self.rate / FULL_HOLD_RATE
        # squared: a few hundred events/s keep a short interval (alerts in milliseconds),
        # ~1,000/s gets the whole hold (the CPU budget), 10,000/s the floor again. The whole
        # hold spans a band (HOLD_BAND) around FULL_HOLD_RATE, not its single point: the
        # estimate wanders ~10% around a steady rate, and at a peak every such wander
        # shortened the interval (83 ms on average at a steady 1,000/s instead of 100).
        low, high = HOLD_BAND
        share = (r / low) ** 2 if r < low else (high / r) ** 2 if r > high else 1.0
        return max(self.min_interval_s, self.max_interval_s * share)

    def note(self, events: int, now: float) -> None:
        """Count events just read (for the rate estimate)."""
        self._window_events += events
        span = now - self._window_start
        if span >= RATE_WINDOW_S:
            self.rate = 0.5 * self.rate + 0.5 * self._window_events / span
            self._window_start = now
            self._window_events = 0

    def _refill(self, now: float) -> None:
        if self.credits < self.burst and now > self._at:
            self.credits = min(self.burst, self.credits + (now - self._at) / self.interval_s)
        self._at = now

    def ready(self, now: float) -> bool:
        """Whether a credit is there."""
        self._refill(now)
        return self.credits >= 1.0

    def spend(self, now: float) -> None:
        """A batch went (a big one goes without a credit: the balance stays at 0)."""
        self._refill(now)
        self.credits = max(0.0, self.credits - 1.0)

    def send_at(self, first_event_at: float, now: float) -> float:
        """When a batch whose first event was read at ``first_event_at`` may go."""
        self._refill(now)
        credit_at = now if self.credits >= 1.0 else now + (1.0 - self.credits) * self.interval_s
        return max(first_event_at + GATHER_S, credit_at)

    def next_credit_at(self, now: float) -> float:
        self._refill(now)
        return now if self.credits >= 1.0 else now + (1.0 - self.credits) * self.interval_s

    def configure(self, max_interval_s: float) -> None:
        self.max_interval_s = max(self.min_interval_s, max_interval_s)
