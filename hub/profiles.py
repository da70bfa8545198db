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

import os
import sqlite3
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import sqlite_utils

ALL = "*"  # subject of a command that applies to every profile


@dataclass(slots=True)
class Profile:
    subject: str
    kind: str  # "container" or "host"
    first_seen: float
    last_seen: float = 0.0
    events: int = 0
    learned: bool = False
    learned_at: float | None = None
    items: set[str] = field(default_factory=set)  # "kind\tvalue"

    def row(self) -> dict[str, Any]:
        return {"subject": self.subject, "kind": self.kind, "first_seen": self.first_seen,
                "last_seen": self.last_seen, "events": self.events, "learned": int(self.learned),
                "learned_at": self.learned_at}


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

    def save(self, profiles: Iterable[Profile], items: list[tuple[str, str, float]]) -> None:
        """Write changed profiles and new behaviours in one transaction."""
        rows = [p.row() for p in profiles]
        behaviors = []
        for subject, item, ts in items:
            kind, _, value = item.partition("\t")
            behaviors.append((subject, kind, value, ts))
        with self.db.conn:
            if rows:
                self.db.conn.executemany(
                    "insert into profiles (subject, kind, first_seen, last_seen, events, learned,"
                    " learned_at) values (:subject, :kind, :first_seen, :last_seen, :events,"
                    " :learned, :learned_at) on conflict(subject) do update set"
                    " last_seen=excluded.last_seen, events=excluded.events,"
                    " learned=excluded.learned, learned_at=excluded.learned_at,"
                    " first_seen=excluded.first_seen", rows)
            if behaviors:
                self.db.conn.executemany(
                    "insert or ignore into behaviors (subject, kind, value, first_seen)"
                    " values (?, ?, ?, ?)", behaviors)

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
