"""Item 5: a crafted command line cannot hold the pipeline (ReDoS).

The default bundle's ``download_pipe_to_shell`` rule (``(curl|wget)\\b[^|;]*\\|...``) takes
time quadratic in the text under a backtracking engine: a 160 KB command line of "curl curl
..." (under 1 KB as LZ4) held the old hub 5.4 s per event. Against a real hub with the default
bundle: the hostile batches and a victim's batch right behind them are all acknowledged at
once, and the long values arrive cut and flagged.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import lz4.frame
import msgspec
from security_helpers import WireSensor, exec_event, file_output, read_events
from transport_helpers import THREATSEER, HubProc, hub_cfg, wait_for

ROOT = Path(__file__).resolve().parents[2]


def test_a_quadratic_command_line_does_not_hold_the_hub(tmp_path, procs) -> None:
    out = tmp_path / "out" / "events.jsonl"
    cfg = hub_cfg(tmp_path, None, bundle=str(ROOT / "rules" / "default"),
                  admin={"allow_unsigned": True}, outputs=[file_output(out)])
    hub = HubProc(tmp_path, cfg).start()
    procs.append(hub)
    ep = cfg["ingest"]["endpoint"]
    evil, victim = WireSensor(ep, "evil"), WireSensor(ep, "victim")
    try:
        # 60 KB a command line: an event fits the hub's 64 KiB (decompressed) per event, so
        # the batch is decoded, the lines cut to 8 KB and the rules run (0.8 s an event on the
        # old hub); 160 KB ones are refused before they are even decompressed.
        line = "curl " * 12_000
        events = [exec_event("evil", i, **{"process.name": "bash",
                                           "process.executable": "/bin/bash",
                                           "process.command_line": line,
                                           "process.args": ["bash", "-c", line[:1000]]})
                  for i in range(5)]
        assert len(lz4.frame.compress(msgspec.msgpack.encode(events))) < 8_000
        huge = [dict(events[0], **{"process.command_line": "curl " * 32_000})]
        t0 = time.monotonic()
        seq = evil.send(events)
        evil.send(huge)
        mine = victim.send([exec_event("victim", 0)])
        assert victim.wait_ack(mine, 10)
        victim_wait = time.monotonic() - t0
        assert evil.wait_ack(seq, 10)
    finally:
        evil.close()
        victim.close()
    assert victim_wait < 1.5, victim_wait  # the old hub: 5 events x 5.4 s
    got = wait_for(lambda: [e for e in read_events(out) if e["agent.id"] == "evil"
                            and e["event.action"] == "exec"], 10, "the hostile events")
    assert len(got) == 5
    for ev in got:
        assert len(ev["process.command_line"]) == 8192
        assert ev["threatseer.truncated_fields"] == ["process.command_line"]
    st = wait_for(lambda: hub.status()["sensors"].get("evil", {}).get("bad"), 10, "counts")
    assert st == {"truncated": 5, "oversized": 1}
    assert hub.stop() == 0


def test_rules_validate_names_patterns_that_need_backtracking(tmp_path: Path) -> None:
    bundle = tmp_path / "b"
    (bundle / "rules").mkdir(parents=True)
    (bundle / "manifest.yaml").write_text("name: t\nversion: 1.0.0\n")
    (bundle / "rules" / "a.yaml").write_text(
        "rules:\n"
        "  - rule: lookahead\n"
        "    description: d\n"
        "    condition: process.command_line regex \"curl(?=.*\\\\|)\"\n"
        "    score: 10\n"
        "  - rule: linear\n"
        "    description: d\n"
        "    condition: process.command_line regex \"(curl|wget)\\\\b[^|;]*\\\\|\"\n"
        "    score: 10\n")
    r = subprocess.run([THREATSEER[0], "rules", "validate", str(bundle)], capture_output=True,
                       text=True)
    assert r.returncode == 0, r.stderr
    warnings = [ln for ln in r.stderr.splitlines() if ln.startswith("warning:")]
    assert len(warnings) == 1 and "rule lookahead" in warnings[0], r.stderr
    assert "needs backtracking" in warnings[0] and "first 1024 characters" in warnings[0]
