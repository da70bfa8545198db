"""A fresh machine may not have tracefs mounted: the probe mounts it, and says so."""

from __future__ import annotations

import logging
import subprocess

import pytest

from threatseer.native import Probe


def test_the_probe_mounts_tracefs_when_it_is_missing(tracefs_unmounted: None,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="threatseer.native"):
        probe = Probe(ring_buffer_kib=256)
    try:
        assert probe.programs
    finally:
        probe.close()
    assert subprocess.run(["mountpoint", "-q", "/sys/kernel/tracing"]).returncode == 0
    assert any("mounted tracefs at /sys/kernel/tracing" in r.getMessage() for r in caplog.records)
