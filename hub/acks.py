"""When the hub acknowledges a sensor's batches: at once, or a little later with the next ones.

An acknowledgement wakes the sensor twice (ZeroMQ's I/O thread, then its reader loop: ~90 µs
of CPU on a small VM) and a sensor that sends small batches at once on a quiet host would pay
that per batch. Acks are cumulative, so the hub sends at most one per ``delay_s`` per sensor
connection: the first after a quiet spell goes at once, later ones wait for the interval and
cover every batch scored meanwhile. A sensor with many batches unacknowledged
(``ACK_AT_ONCE_OUTSTANDING``: the header's sequence number minus its base), or with many
bytes of them scored since its last ack (``ACK_AT_ONCE_BYTES``), is answered at once so that
its send window never fills. Nothing here changes what an ack means: it is
still sent only after the ledger commit that made its batches durable.

The default delay (``ingest.ack_delay_ms``, 500 ms): at 1,000 events/s a sensor sends ~10
batches a second, and at 100 ms each of them brought its own ack, a third of the sensor's
wakeups; at 500 ms about two a second. Above and below that rate batches are more frequent
(7-20 ms apart) and the outstanding rule decides: at 8 it answered a sensor sending 100
batches a second 12 times a second, at 16 about 6 times. Longer delays would save little more
and keep a stopping sensor waiting longer for its last ack. What an ack's timing bounds: the
sensor's go-back (``resend_after_s``, 5 s, must stay well above it), its send window
(``ack_window``, 64 batches, and INFLIGHT_MAX_BYTES, 1 MiB: the outstanding and bytes rules
answer well before either), and how long an acknowledged batch's row stays in the spool
(deleted at most once a second).
"""

from __future__ import annotations

ACK_AT_ONCE_OUTSTANDING = 16
# ... or once this many bytes of batches were scored since the connection's last ack: a
# sensor stops sending at 1 MiB unacknowledged (sensor/ship.py INFLIGHT_MAX_BYTES), and a
# few big, poorly compressible batches (long command lines) reach that before 16 of them.
ACK_AT_ONCE_BYTES = 256 << 10
Key = tuple[bytes, str]  # (ROUTER peer id, sensor id)


class DelayedAcks:
    def __init__(self, delay_s: float) -> None:
        self.delay_s = delay_s
        self._pending: dict[Key, tuple[int, int]] = {}  # key -> (epoch, seq)
        self._sent_at: dict[Key, float] = {}
        self._bytes: dict[Key, int] = {}  # key -> bytes scored since its last ack (pending)
        self._pruned_at = 0.0

    def add(self, key: Key, epoch: int, seq: int, outstanding: int,
            now: float, nbytes: int = 0) -> tuple[int, int] | None:
        """Record that ``seq`` of ``epoch`` may be acknowledged (``nbytes``: the size of the
        batches it adds); return ``(epoch, seq)`` when the ack should go now, else None (it
        goes from :meth:`due`)."""
        last = self._sent_at.get(key)
        pending_bytes = self._bytes.get(key, 0) + nbytes
        if (self.delay_s <= 0 or last is None or now - last >= self.delay_s
                or outstanding >= ACK_AT_ONCE_OUTSTANDING or outstanding <= 0
                or pending_bytes >= ACK_AT_ONCE_BYTES):
            self._pending.pop(key, None)
            self._bytes.pop(key, None)
            self._sent_at[key] = now
            return epoch, seq
        self._pending[key] = (epoch, seq)
        self._bytes[key] = pending_bytes
        return None

    def due(self, now: float, everything: bool = False) -> list[tuple[Key, int, int]]:
        """Acks whose delay is over (all of them with ``everything``), to send now. Also
        forgets connections quiet for longer than the delay (their next ack goes at once)."""
        out = []
        for key, (epoch, seq) in list(self._pending.items()):
            if everything or now - self._sent_at.get(key, 0.0) >= self.delay_s:
                del self._pending[key]
                self._bytes.pop(key, None)
                self._sent_at[key] = now
                out.append((key, epoch, seq))
        if now - self._pruned_at >= self.delay_s and len(self._sent_at) > len(self._pending):
            self._pruned_at = now
            stale = [k for k, t in self._sent_at.items()
                     if now - t >= self.delay_s and k not in self._pending]
            for k in stale:
                del self._sent_at[k]
        return out

    def next_due(self) -> float | None:
        """When the earliest pending ack is due (monotonic seconds), or None."""
        if not self._pending:
            return None
        return min(self._sent_at.get(k, 0.0) for k in self._pending) + self.delay_s
