"""Fixtures of the hub tests; they and the helpers themselves are in hub_helpers.py."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from hub_helpers import start_hub, zctx  # noqa: E402

__all__ = ["start_hub", "zctx"]
