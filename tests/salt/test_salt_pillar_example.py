"""pillar.example's daemon configs are valid for the daemons' own config loaders."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml
from salt_helpers import STATES, THREATSEER

EXAMPLE = STATES / "threatseer" / "pillar.example"
DEFAULTS = STATES / "threatseer" / "defaults.yaml"


def _filled(value: object, tmp: Path) -> object:
    """The config with every ${placeholder} replaced by a path under ``tmp`` (the minion id
    by a host name)."""
    text = yaml.safe_dump(value)
    return yaml.safe_load(re.sub(r"\$\{(\w+)\}", lambda m: "web-1.example.net"
                                 if m.group(1) == "minion_id" else f"{tmp}/{m.group(1)}", text))


@pytest.mark.parametrize("role", ["sensor", "hub"])
def test_example_and_default_configs_load(role: str, tmp_path: Path) -> None:
    for source in (EXAMPLE, DEFAULTS):
        config = yaml.safe_load(source.read_text())["threatseer"][role]["config"]
        path = tmp_path / f"{role}.yaml"
        path.write_text(yaml.safe_dump(_filled(config, tmp_path)))
        proc = subprocess.run([THREATSEER, role, "--print-config", "-c", str(path)],
                              capture_output=True, text=True)
        assert proc.returncode == 0, f"{source.name}: {proc.stderr}"


def test_a_bad_key_is_caught_by_the_check(tmp_path: Path) -> None:
    path = tmp_path / "sensor.yaml"
    path.write_text("hub: tcp://127.0.0.1:1\nbatch_sise: 10\n")
    proc = subprocess.run([THREATSEER, "sensor", "--print-config", "-c", str(path)],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "batch_sise" in proc.stderr
