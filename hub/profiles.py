"""Behaviour profiles in SQLite (through sqlite-utils): what the hub learned about each subject.

Tables:
  profiles(subject, kind, first_seen, last_seen, events, learned, learned_at)
  behaviors(subject, kind, value, first_seen)   -- one row per distinct learned behaviour
  commands(id, subject, op, at)                 -- reset/relearn requests from the CLI

The running hub keeps every profile in memory and writes in batches; ``threatseer profiles
reset|relearn`` changes the database *and* appends a command row, which the hub applies to its
cache at its next flush, so the CLI works whether or not a hub is running.
"""

from __future__ import annotations

import logging
import os
import queue
import sqlite3
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

import sqlite_utils

# One profile in memory: a C type, because the profile engine's native loop updates one per
# event (threatseer.hub.engines._profile).
from threatseer.hub.engines._profile import Profile

ALL = "*"  # subject of a command that applies to every profile
log = logging.getLogger("threatseer.hub.profiles")
CHUNK = 500  # rows per statement (7 parameters each: well under SQLite's 32766 limit)


class ProfileStore:
    def __init__(self, path: str) -> None:
        self.path = path
        if path != ":memory:":
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        # Opened here, used by the hub's pipeline thread (one user at a time).
        self.db = sqlite_utils.Database(sqlite3.connect(path, check_same_thread=False))
        if path != ":memory:":
            self.db.enable_wal()
        self.db.execute("PRAGMA busy_timeout = 5000")
        if "profiles" not in self.db.table_names():
            self.db["profiles"].create(
                {"subject": str, "kind": str, "first_seen": float, "last_seen": float,
                 "events": int, "learned": int, "learned_at": float}, pk="subject",
                if_not_exists=True)
        if "behaviors" not in self.db.table_names():
            self.db["behaviors"].create(
                {"subject": str, "kind": str, "value": str, "first_seen": float},
                pk=("subject", "kind", "value"), if_not_exists=True)
        if "commands" not in self.db.table_names():
            self.db["commands"].create(
                {"id": int, "subject": str, "op": str, "at": float}, pk="id",
                if_not_exists=True)

    # -- used by the hub -----------------------------------------------------------------
    def load_all(self) -> dict[str, Profile]:
        profiles = {
            r["subject"]: Profile(r["subject"], r["kind"], r["first_seen"], r["last_seen"] or 0.0,
                                  r["events"] or 0, bool(r["learned"]), r["learned_at"])
            for r in self.db["profiles"].rows
        }
        for subject, kind, value in self.db.execute(
                "select subject, kind, value from behaviors").fetchall():
            prof = profiles.get(subject)
            if prof is not None:
                prof.items.add(f"{kind}\t{value}")
        return profiles

    def save(self, rows: list[dict[str, Any]], items: list[tuple[str, str, float]]) -> None:
        """Write changed profiles (``Profile.row()``) and new behaviours in one transaction.

        Rows go in multi-row statements of up to ``CHUNK`` rows: executemany would release and
        retake the GIL around every row, and on a busy host each retake can stall the pipeline
        thread for a scheduler tick.
        """
        conn = self.db.conn
        with conn:
            for i in range(0, len(rows), CHUNK):
                chunk = rows[i:i + CHUNK]
                params: list[Any] = []
                for r in chunk:
                    params += (r["subject"], r["kind"], r["first_seen"], r["last_seen"],
                               r["events"], r["learned"], r["learned_at"])
                conn.execute(
                    "insert into profiles (subject, kind, first_seen, last_seen, events, learned,"
                    " learned_at) values " + ",".join(["(?,?,?,?,?,?,?)"] * len(chunk))
                    + " on conflict(subject) do update set last_seen=excluded.last_seen,"
                    " events=excluded.events, learned=excluded.learned,"
                    " learned_at=excluded.learned_at, first_seen=excluded.first_seen", params)
            for i in range(0, len(items), CHUNK):
                chunk_items = items[i:i + CHUNK]
                params = []
                for subject, item, ts in chunk_items:
                    kind, _, value = item.partition("\t")
                    params += (subject, kind, value, ts)
                conn.execute(
                    "insert or ignore into behaviors (subject, kind, value, first_seen) values "
                    + ",".join(["(?,?,?,?)"] * len(chunk_items)), params)

    def last_command(self) -> int:
        row = self.db.execute("select max(id) from commands").fetchone()
        return row[0] or 0

    def commands_after(self, last_id: int) -> list[tuple[int, str, str, float]]:
        return self.db.execute(
            "select id, subject, op, at from commands where id > ? order by id",
            [last_id]).fetchall()

    # -- used by the CLI -----------------------------------------------------------------
    def list(self) -> list[dict[str, Any]]:
        return list(self.db.query(
            "select p.subject, p.kind, p.events, p.learned, p.first_seen, p.last_seen,"
            " p.learned_at, (select count(*) from behaviors b where b.subject = p.subject)"
            " as behaviors from profiles p order by p.subject"))

    def show(self, subject: str) -> dict[str, Any] | None:
        rows = list(self.db.query("select * from profiles where subject = ?", [subject]))
        if not rows:
            return None
        prof = dict(rows[0])
        prof["learned"] = bool(prof["learned"])
        prof["behaviors"] = {}
        for r in self.db.query("select kind, value from behaviors where subject = ?"
                               " order by kind, value", [subject]):
            prof["behaviors"].setdefault(r["kind"], []).append(r["value"])
        return prof

    def reset(self, subject: str) -> int:
        """Forget a subject (or every subject with ``*``): it learns again from scratch."""
        where, args = ("", []) if subject == ALL else (" where subject = ?", [subject])
        with self.db.conn:
            n = self.db.conn.execute("delete from profiles" + where, args).rowcount
            self.db.conn.execute("delete from behaviors" + where, args)
            self.db.conn.execute("insert into commands (subject, op, at) values (?, 'reset', ?)",
                                 [subject, time.time()])
        return n

    def relearn(self, subject: str) -> int:
        """Open a new learning window, keeping what was learned so far."""
        where, args = ("", []) if subject == ALL else (" where subject = ?", [subject])
        now = time.time()
        with self.db.conn:
            n = self.db.conn.execute(
                "update profiles set learned = 0, learned_at = null, events = 0, first_seen = ?"
                + where, [now, *args]).rowcount
            self.db.conn.execute(
                "insert into commands (subject, op, at) values (?, 'relearn', ?)", [subject, now])
        return n

    def close(self) -> None:
        self.db.close()


Command = tuple[int, str, str, float]  # (id, subject, op, at)


@dataclass
class Snapshot:
    """What changed in memory since the last write, and the last CLI command applied to it."""

    rows: dict[str, dict[str, Any]]
    items: list[tuple[str, str, float]]
    commands_applied: int


def _filter(snap: Snapshot, cmd: Command) -> None:
    """Make an older snapshot agree with a CLI command it was taken before."""
    _id, subject, op, at = cmd
    hit = (lambda s: True) if subject == ALL else (lambda s: s == subject)
    if op == "reset":
        snap.rows = {s: r for s, r in snap.rows.items() if not hit(s)}
        snap.items = [it for it in snap.items if not hit(it[0])]
    elif op == "relearn":
        for s, r in snap.rows.items():
            if hit(s):
                r.update(learned=0, learned_at=None, events=0, first_seen=at)


class ProfileWriter:
    """Writes snapshots to SQLite off the pipeline thread and fetches CLI commands.

    A write of a few thousand rows takes tens of milliseconds: on the pipeline thread that
    would be a latency spike every flush. Commands fetched here are handed to the pipeline
    (:attr:`inbox`); until it has applied them, snapshots it took earlier are corrected
    (:func:`_filter`) so a reset subject is not written back.
    """

    def __init__(self, store: ProfileStore, poll_s: float = 1.0) -> None:
        self.store = store
        self.poll_s = poll_s
        self.inbox: deque[Command] = deque()
        self._fetched = store.last_command()
        self._recent: list[Command] = []
        self._queue: queue.Queue[Snapshot | None] = queue.Queue()
        self._pending: Snapshot | None = None
        self._thread = threading.Thread(target=self._run, name="profile-writer", daemon=True)
        self._thread.start()

    @property
    def last_command(self) -> int:
        return self._fetched

    def submit(self, snap: Snapshot) -> None:
        self._queue.put(snap)

    def close(self) -> None:
        """Write everything submitted, then stop."""
        self._queue.put(None)
        self._thread.join()

    def _run(self) -> None:
        while True:
            try:
                snap = self._queue.get(timeout=self.poll_s)
            except queue.Empty:
                snap = Snapshot({}, [], -1)
            stop = snap is None
            self._fetch_commands()
            if snap is not None and (snap.rows or snap.items):
                self._merge(snap)
            if self._pending is not None:
                try:
                    self.store.save(list(self._pending.rows.values()), self._pending.items)
                    self._pending = None
                except Exception as exc:  # locked/broken database: keep it, retry next time
                    log.warning("profile write failed, will retry: %s", exc)
            if stop:
                return

    def _fetch_commands(self) -> None:
        try:
            cmds = self.store.commands_after(self._fetched)
        except Exception as exc:
            log.warning("cannot read profile commands: %s", exc)
            return
        for cmd in cmds:
            self._fetched = cmd[0]
            self._recent.append(cmd)
            self.inbox.append(cmd)

    def _merge(self, snap: Snapshot) -> None:
        for cmd in self._recent:
            if cmd[0] > snap.commands_applied:
                _filter(snap, cmd)
        self._recent = [c for c in self._recent if c[0] > snap.commands_applied]
        if self._pending is None:
            self._pending = snap
        else:
            self._pending.rows.update(snap.rows)
            self._pending.items.extend(snap.items)
