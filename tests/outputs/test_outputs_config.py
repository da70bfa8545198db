"""Output configs load through the shared config loader; mistakes name file, line and key."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest

from threatseer.common.configfile import ConfigError, from_dict, load
from threatseer.hub.outputs import OutputConfig, Outputs, check_unique_names
from threatseer.hub.outputs.config import KafkaOptions


@dataclass
class HubLike:
    """Stand-in for the hub's config: just the outputs list, as hub.yaml holds it."""

    outputs: list[OutputConfig] = field(default_factory=list)


GOOD = """\
outputs:
  - type: elasticsearch
    options:
      hosts: [http://127.0.0.1:9200]
      index_mode: daily
  - type: kafka
    name: alerts
    kinds: [alert]
    min_score: 50
    overflow: spill
    options:
      topic: threatseer-alerts
      compression: zstd
"""


def test_good_config_loads_with_typed_options(tmp_path: Path) -> None:
    path = tmp_path / "hub.yaml"
    path.write_text(GOOD)
    cfg = load(path, HubLike)
    es, kafka = cfg.outputs
    assert es.type == "elasticsearch" and es.label == "elasticsearch"
    assert es.typed_options().index_mode == "daily"
    opts = kafka.typed_options()
    assert isinstance(opts, KafkaOptions)
    assert (kafka.label, opts.topic, opts.compression, kafka.min_score) == (
        "alerts", "threatseer-alerts", "zstd", 50)


@pytest.mark.parametrize(("snippet", "line", "key", "words"), [
    ("  - type: elastic\n", 2, "outputs[0].type", "unknown output type"),
    ("  - type: redis\n    overflow: sometimes\n", 3, "outputs[0].overflow", "block"),
    ("  - type: redis\n    options:\n      mode: set\n", 4, "outputs[0].options.mode",
     "list, stream or pubsub"),
    ("  - type: elasticsearch\n    options:\n      hots: [x]\n", 4,
     "outputs[0].options.hots", "unknown key"),
    ("  - type: kafka\n    options:\n      topic: 7\n", 4, "outputs[0].options.topic",
     "expected str"),
    ("  - type: file\n", None, "outputs[0].options.path", "required"),
    ("  - type: stdout\n    queue_size: 0\n", 3, "outputs[0].queue_size", "at least 1"),
    ("  - type: stdout\n    kinds: [alarm]\n", 3, "outputs[0].kinds[0]", "unknown event.kind"),
])
def test_bad_config_names_file_line_and_key(tmp_path: Path, snippet: str, line: int | None,
                                            key: str, words: str) -> None:
    path = tmp_path / "hub.yaml"
    path.write_text("outputs:\n" + snippet)
    with pytest.raises(ConfigError) as info:
        load(path, HubLike)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{path}:"), message
    assert f": {key}: " in message, message
    assert words in message
    # The key's own line (none for a key that is missing from the file).
    assert info.value.line == line


def test_from_dict_and_duplicate_names() -> None:
    a = from_dict({"type": "redis"}, OutputConfig)
    b = from_dict({"type": "redis"}, OutputConfig)
    with pytest.raises(ValueError, match=r"outputs\[1\]\.name: 'redis' is already used"):
        check_unique_names([a, b])
    with pytest.raises(ValueError, match="already used"):
        Outputs([a, b])
    b.name = "redis-stream"
    check_unique_names([a, b])


def test_hub_cli_exits_2_naming_file_and_key(tmp_path: Path, threatseer_cmd: list[str]) -> None:
    """The hub's CLI loads outputs through the same loader: exit 2, one line on stderr."""
    import subprocess

    path = tmp_path / "hub.yaml"
    path.write_text("outputs:\n  - type: kafka\n    options:\n      compression: brotli\n")
    run = subprocess.run([*threatseer_cmd, "hub", "-c", str(path), "--print-config"],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 2
    assert run.stderr.strip().splitlines() == [
        f"threatseer: config error: {path}:4: outputs[0].options.compression: "
        "must be none, gzip, snappy, lz4 or zstd"]
