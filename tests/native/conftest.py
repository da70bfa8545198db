"""Fixtures for the native-core tests: a real probe on the real kernel (root only).

The machine is shared, so every assertion picks this test's own events out of the stream
by pid or by a distinctive value; nothing here assumes the kernel is otherwise quiet.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

if os.geteuid() != 0:
    pytest.skip("the native probe needs root (BPF)", allow_module_level=True)

from threatseer.native import Probe  # noqa: E402

Event = dict[str, Any]


class Collector:
    """Polls a probe and keeps every event, so a test can wait for the ones it caused."""

    def __init__(self, probe: Probe) -> None:
        self.probe = probe
        self.events: list[Event] = []

    def drain(self) -> None:
        """Forget what came before (events of earlier tests or other users)."""
        while self.probe.poll(timeout_ms=0):
            pass
        self.events = []

    def wait(self, pred: Callable[[Event], bool], count: int = 1,
             timeout: float = 5.0) -> list[Event]:
        """Events matching pred, once at least count arrived (or timeout: what there is)."""
        deadline = time.monotonic() + timeout
        while True:
            found = [e for e in self.events if pred(e)]
            if len(found) >= count or time.monotonic() > deadline:
                return found
            self.events.extend(self.probe.poll(timeout_ms=50))

    def settle(self, seconds: float = 0.3) -> None:
        """Collect for a while (to show something did NOT happen)."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.events.extend(self.probe.poll(timeout_ms=50))


@pytest.fixture(scope="module")
def probe() -> Iterator[Probe]:
    # self_tgid=0: the test process itself must be seen (the self filter has its own test)
    # module_fallback: this VM's kernel has no module tracepoints; the attempts are tested
    p = Probe(ring_buffer_kib=4096, sensitive_paths=["/etc/shadow"], self_tgid=0,
              module_fallback=True)
    try:
        yield p
    finally:
        p.close()


@pytest.fixture
def events(probe: Probe) -> Iterator[Collector]:
    c = Collector(probe)
    c.drain()
    yield c
    probe.set_sensitive_paths(["/etc/shadow"])
