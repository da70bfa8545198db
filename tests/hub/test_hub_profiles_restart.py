"""Profiles live in SQLite: they survive a hub restart and are managed with
``threatseer profiles list|show|reset|relearn`` (also while a hub runs)."""

from __future__ import annotations

import json
import subprocess
import time
from typing import Any

from hub_helpers import Sender, Subscriber, exec_event, wait_connected

from threatseer.hub.config import ProfileConfig

PROFILES = ProfileConfig(learn_seconds=0, learn_min_events=3, abnormal_score=20,
                         normal_score=-5, flush_interval_s=0.2)
SUBJECT = "host:web1:/usr/bin/backup"


def backup(*args: str) -> dict[str, Any]:
    return exec_event("/usr/bin/backup", ["backup", *args])


def scores(hub, zctx, batches: list[list[dict[str, Any]]]) -> list[int]:  # type: ignore[no-untyped-def]
    sub = Subscriber(zctx, hub.publisher.endpoint, topics=("event.process.exec",))
    sender = Sender(zctx, hub.ingest.endpoint, "s1")
    wait_connected(sender, Subscriber(zctx, hub.publisher.endpoint))
    n = 0
    for batch in batches:
        sender.send(batch)
        n += len(batch)
    got = sub.collect(n)
    sub.close()
    sender.close()
    return [ev["event.risk_score"] for _t, ev in got]


def cli(cmd: list[str], db: str, *args: str) -> str:
    proc = subprocess.run([*cmd, "profiles", "--db", db, *args], capture_output=True, text=True,
                          timeout=30)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_profiles_survive_a_restart_and_the_cli_manages_them(
        start_hub, zctx, threatseer_cmd) -> None:
    hub = start_hub(profiles=PROFILES)
    db = hub.cfg.profile_db()
    learning = [[backup("--keep", str(i))] for i in range(4)]
    assert scores(hub, zctx, learning) == [0, 0, 0, -5]
    hub.stop()

    hub = start_hub(profiles=PROFILES)  # same state_dir: a restart
    assert hub.cfg.profile_db() == db
    assert scores(hub, zctx, [[backup("--keep", "77"), backup("--wipe")]]) == [-5, 20]

    listed = cli(threatseer_cmd, db, "list")
    assert "learned" in listed and SUBJECT in listed
    shown = json.loads(cli(threatseer_cmd, db, "show", SUBJECT))
    assert shown["learned"] is True
    assert shown["behaviors"]["argv"] == ["/usr/bin/backup --keep <n>"]
    assert shown["behaviors"]["parent"] == ["/bin/bash > /usr/bin/backup"]

    # relearn while the hub runs: --wipe is learned now, then the subject is scored again
    assert "relearning 1" in cli(threatseer_cmd, db, "relearn", SUBJECT)
    time.sleep(0.5)  # the hub applies CLI commands at its next flush (every 0.2 s here)
    assert scores(hub, zctx, [[backup("--wipe")], [backup("--wipe")], [backup("--wipe")],
                              [backup("--wipe")], [backup("--shred")]]) == [0, 0, 0, -5, 20]
    # reset forgets everything: learning from scratch
    assert "reset 1" in cli(threatseer_cmd, db, "reset", SUBJECT)
    time.sleep(0.5)
    assert scores(hub, zctx, [[backup("--shred")]]) == [0]
    hub.stop()
    shown = json.loads(cli(threatseer_cmd, db, "show", SUBJECT))
    assert shown["learned"] is False and shown["events"] == 1
    assert shown["behaviors"]["argv"] == ["/usr/bin/backup --shred"]
