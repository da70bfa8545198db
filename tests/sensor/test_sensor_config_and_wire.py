"""Config files and the wire format: what a user or a hub sees when input is bad."""

from __future__ import annotations

import subprocess

import msgpack
import pytest

from threatseer.common import configfile, wire
from threatseer.sensor.config import SensorConfig


def write(tmp_path, text: str):
    path = tmp_path / "sensor.yaml"
    path.write_text(text)
    return path


def test_defaults_apply_for_missing_keys(tmp_path):
    cfg = configfile.load(write(tmp_path, "hub: tcp://10.0.0.1:5555\n"), SensorConfig)
    assert cfg.hub == "tcp://10.0.0.1:5555"
    assert cfg.batch_size == SensorConfig().batch_size
    assert "/etc/shadow" in cfg.sensitive_paths


@pytest.mark.parametrize(
    ("text", "line", "key", "fragment"),
    [
        ("hub: x\nbatch_size: many\n", 2, "batch_size", "expected int"),
        ("hub: x\nbogus: 1\n", 2, "bogus", "unknown key"),
        ("sensitive_paths:\n  - /etc\n  - relative/path\n", 3, "sensitive_paths[1]",
         "absolute"),
        ("ring_buffer_kib: 3000\n", 1, "ring_buffer_kib", "power of two"),
        ("hub: [unclosed\n", 2, "", "invalid YAML"),
    ],
)
def test_bad_config_names_file_line_and_key(tmp_path, text, line, key, fragment):
    path = write(tmp_path, text)
    with pytest.raises(configfile.ConfigError) as info:
        configfile.load(path, SensorConfig)
    msg = str(info.value)
    assert msg.startswith(f"{path}:{line}: "), msg
    assert key in msg and fragment in msg


def test_cli_exits_2_with_one_line(tmp_path, threatseer_cmd):
    path = write(tmp_path, "health_interval_s: soon\n")
    proc = subprocess.run([*threatseer_cmd, "sensor", "-c", str(path)], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert f"{path}:1" in lines[0] and "health_interval_s" in lines[0]


def test_missing_config_file_exits_2(tmp_path, threatseer_cmd):
    proc = subprocess.run([*threatseer_cmd, "sensor", "-c", str(tmp_path / "nope.yaml")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "nope.yaml" in proc.stderr


def test_wire_round_trip():
    events = [{"event.action": "exec", "process.pid": 7, "process.args": ["a", "b"]}]
    frames = wire.encode(wire.Batch("s-1", 42, events, host="h"))
    batch = wire.decode(frames)
    assert (batch.sensor_id, batch.seq, batch.events, batch.host) == ("s-1", 42, events, "h")


def test_wire_common_fields_travel_once_and_events_win():
    events = [{"event.action": "exec", "host.name": "own"}, {"event.action": "exit"}]
    common = {"host.name": "h1", "agent.id": "s-1"}
    frames = wire.encode(wire.Batch("s-1", 1, [dict(e) for e in events], common=common))
    assert frames[1].count(b"agent.id") == 0  # not repeated per event in the body
    batch = wire.decode(frames)
    assert batch.events[0] == {"event.action": "exec", "host.name": "own", "agent.id": "s-1"}
    assert batch.events[1] == {"event.action": "exit", "host.name": "h1", "agent.id": "s-1"}


@pytest.mark.parametrize(
    ("frames", "reason"),
    [
        ([b"only one"], wire.BAD_FRAMES),
        ([b"\xc1garbage", b""], wire.BAD_HEADER),
        ([msgpack.packb({"v": 99, "sid": "s", "seq": 1, "n": 0}), msgpack.packb([])],
         wire.BAD_VERSION),
        ([msgpack.packb({"v": 1, "sid": "", "seq": 1, "n": 0}), msgpack.packb([])],
         wire.BAD_HEADER),
        ([msgpack.packb({"v": 1, "sid": "s", "seq": 1, "n": 2}), msgpack.packb([{}])],
         wire.BAD_BODY),
        ([msgpack.packb({"v": 1, "sid": "s", "seq": 1, "n": 0, "c": [1]}), msgpack.packb([])],
         wire.BAD_HEADER),
        ([msgpack.packb({"v": 1, "sid": "s", "seq": 1, "n": 1}), b"\x91\xc1"], wire.BAD_BODY),
        ([msgpack.packb({"v": 1, "sid": "s", "seq": 1, "n": 1}),
          b"\x00" * (wire.MAX_BODY_BYTES + 1)], wire.TOO_LARGE),
    ],
)
def test_wire_rejects_bad_messages_with_a_reason(frames, reason):
    with pytest.raises(wire.WireError) as info:
        wire.decode(frames)
    assert info.value.reason == reason
