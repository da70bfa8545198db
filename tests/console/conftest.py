"""Fixtures of the console tests; the helpers are in console_helpers.py (this folder and
tests/hub are put on sys.path)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "hub"))


@pytest.fixture
def tokens(tmp_path):  # type: ignore[no-untyped-def]
    from console_helpers import Tokens

    return Tokens.make(tmp_path / "tokens")


@pytest.fixture
def console_hub(tmp_path, tokens):  # type: ignore[no-untyped-def]
    """Factory of in-process hubs (default bundle, plaintext, free ports) serving the console
    (its own process) on a free loopback port; all stopped at the end, even on failure."""
    from console_helpers import default_bundle
    from hub_helpers import hub_config

    from threatseer.hub.daemon import Hub

    hubs = []

    def make(**overrides):  # type: ignore[no-untyped-def]
        overrides.setdefault("console__listen", "127.0.0.1:0")
        overrides.setdefault("console__viewer_tokens", str(tokens.viewer_file))
        overrides.setdefault("console__admin_tokens", str(tokens.admin_file))
        cfg = hub_config(tmp_path / f"hub{len(hubs)}", **overrides)
        hub = Hub(cfg, bundle=default_bundle(), stop_timeout_s=5)
        hubs.append(hub)
        hub.start()
        assert hub.console is not None, "console did not start"
        return hub

    yield make
    for hub in hubs:
        if not hub._stopped:
            hub.stop()
