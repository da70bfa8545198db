"""Helpers for the console tests: tokens, HTTP and server-sent-event clients, events."""

from __future__ import annotations

import functools
import http.client
import json
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from threatseer.hub.console.tokens import new_token

ROOT = Path(__file__).resolve().parents[2]


@functools.cache
def default_bundle():  # type: ignore[no-untyped-def]
    from threatseer.hub.rules.bundle import load_bundle

    return load_bundle(ROOT / "rules" / "default")


@dataclass
class Tokens:
    viewer: str
    admin: str
    viewer_file: Path
    admin_file: Path

    @classmethod
    def make(cls, folder: Path) -> Tokens:
        folder.mkdir(parents=True, exist_ok=True)
        viewer, viewer_hash = new_token()
        admin, admin_hash = new_token()
        (folder / "viewers").write_text(f"# console viewers\n{viewer_hash}  # vera\n")
        (folder / "admins").write_text(f"{admin_hash}  # ada\n")
        return cls(viewer, admin, folder / "viewers", folder / "admins")


def request(base: str, path: str, token: str | None = None, method: str = "GET",
            body: Any = None, headers: dict[str, str] | None = None,
            timeout: float = 10.0) -> tuple[int, Any]:
    """``(status, decoded JSON body)`` of one request to the console at ``base``; status 0
    when nothing listens there."""
    hdrs = dict(headers or {})
    if token is not None:
        hdrs["Authorization"] = f"Bearer {token}"
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        hdrs.setdefault("Content-Type", "application/json")
    req = urllib.request.Request(base.rstrip("/") + path, data=data, method=method,
                                 headers=hdrs)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            raw = resp.read()
            status = resp.status
    except urllib.error.HTTPError as exc:
        raw, status = exc.read(), exc.code
    except (urllib.error.URLError, ConnectionError):  # not listening (yet, or any more)
        return 0, None
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw


class Stream:
    """A server-sent-event client of ``/api/stream`` (plain http.client, so the test sees
    exactly the bytes a browser gets)."""

    def __init__(self, base: str, token: str, query: str = "", timeout: float = 10.0) -> None:
        u = urlsplit(base)
        self.conn = http.client.HTTPConnection(u.hostname, u.port, timeout=timeout)
        self.conn.request("GET", "/api/stream" + (f"?{query}" if query else ""),
                          headers={"Authorization": f"Bearer {token}"})
        self.resp = self.conn.getresponse()
        self.status = self.resp.status

    def next_event(self) -> tuple[str, Any, str | None]:
        """``(event name, decoded data, id)`` of the next event (comments skipped)."""
        kind, data, eid = "message", "", None
        while True:
            line = self.resp.readline()
            if not line:
                raise EOFError("stream closed")
            text = line.decode().rstrip("\n")
            if not text:
                if data:
                    return kind, json.loads(data), eid
                continue
            if text.startswith("event: "):
                kind = text[7:]
            elif text.startswith("data: "):
                data += text[6:]
            elif text.startswith("id: "):
                eid = text[4:]

    def alerts_until(self, predicate, timeout: float = 5.0) -> list[dict[str, Any]]:  # type: ignore[no-untyped-def]
        """Alerts received until one matches ``predicate`` (AssertionError on timeout)."""
        deadline = time.monotonic() + timeout
        got: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            kind, data, _ = self.next_event()
            if kind == "alerts":
                got.extend(data)
                if any(predicate(a) for a in data):
                    return got
        raise AssertionError(f"no matching alert within {timeout}s: {got[-5:]}")

    def close(self) -> None:
        self.conn.close()


def wait_until(predicate, timeout: float = 10.0, every: float = 0.05, what: str = ""):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")


def shadow_read(host: str, n: int, parent: str = "E-py") -> list[dict[str, Any]]:
    """The events of ``bash -c 'cat /etc/shadow; true'`` on ``host`` (round ``n``): bash's
    exec, its fork, cat's exec and cat's open, with the entity ids a sensor gives them."""
    from hub_helpers import exec_event, open_event

    bash, cat = f"{host}-bash-{n}", f"{host}-cat-{n}"
    common = {"host.name": host, "agent.version": "0.1.0"}
    return [
        exec_event("/usr/bin/bash", ["bash", "-c", "cat /etc/shadow; true"], **common,
                   **{"process.entity_id": bash, "process.parent.entity_id": parent,
                      "process.parent.name": "sshd", "threatseer.ancestors": ["sshd", "systemd"]}),
        exec_event("/usr/bin/cat", ["cat", "/etc/shadow"], **common,
                   **{"process.entity_id": cat, "process.parent.entity_id": bash,
                      "process.parent.name": "bash",
                      "threatseer.ancestors": ["bash", "sshd", "systemd"]}),
        open_event("/etc/shadow", **common,
                   **{"process.entity_id": cat, "process.name": "cat",
                      "process.parent.entity_id": bash,
                      "threatseer.ancestors": ["bash", "sshd", "systemd"]}),
    ]
