"""Fixtures of the rules tests (helpers live in rules_helpers.py beside this file)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from rules_helpers import SIMPLE_RULES, write_bundle  # noqa: E402


@pytest.fixture
def simple_bundle(tmp_path: Path) -> Path:
    return write_bundle(tmp_path / "b", {"rules/main.yaml": SIMPLE_RULES})
