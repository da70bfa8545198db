"""Every user mistake is one line on stderr and a non-zero exit, never a traceback: the CLI
run as a subprocess, as a user runs it."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.conftest import free_port

ROOT = Path(__file__).resolve().parents[2]


def run(cmd: list[str], *args: str | Path, cwd: Path | None = None) -> \
        subprocess.CompletedProcess[str]:
    return subprocess.run([*cmd, *map(str, args)], capture_output=True, text=True, timeout=60,
                          cwd=cwd)


CASES = {
    # the three of the issue
    "keys gen to a missing directory": (
        ["keys", "gen", "--type", "curve", "-o", "{tmp}/nonexistent/x.key"],
        "nonexistent/x.key: No such file or directory"),
    "keys gen (signing) to a missing directory": (
        ["keys", "gen", "--type", "signing", "-o", "{tmp}/nonexistent/x.key"],
        "nonexistent/x.key: No such file or directory"),
    "replay of a missing file": (
        ["replay", "missing.jsonl"], "File 'missing.jsonl' does not exist"),
    "tap with a bogus endpoint": (
        ["tap", "--endpoint", "bogus://x"],
        "threatseer tap: Invalid value for --endpoint: Protocol not supported"),
    # and the others found by trying
    "rules publish to a bogus endpoint": (
        ["rules", "publish", "{tmp}/bundle.tar.gz", "--hub", "bogus://x"],
        "Invalid value for --hub: Protocol not supported"),
    "rules publish with a key that is not one": (
        ["rules", "publish", "{tmp}/bundle.tar.gz", "--hub", "tcp://127.0.0.1:{port}", "-k",
         "{tmp}/bundle.tar.gz"], "not an ed25519 secret key"),
    "rules list of a hub that does not answer": (
        ["rules", "list", "--hub", "tcp://127.0.0.1:{port}", "--timeout", "0.3"],
        "no answer from tcp://127.0.0.1:"),
    "rules build to a missing directory": (
        ["rules", "build", "{tmp}/src", "-o", "{tmp}/nonexistent/x.tar.gz"],
        "nonexistent/x.tar.gz: No such file or directory"),
    "rules sign with a non-key": (
        ["rules", "sign", "{tmp}/bundle.tar.gz", "-k", "{tmp}/bundle.tar.gz"],
        "not an ed25519 secret key"),
    "rules validate of a non-archive": (
        ["rules", "validate", "{tmp}/not-a-bundle"], "not a bundle archive"),
    "rules validate of a local layer on a missing base": (
        ["rules", "validate", "{tmp}/src", "--base", "{tmp}/missing"],
        "Path '{tmp}/missing' does not exist"),
    "profiles of a file that is not a database": (
        ["profiles", "--db", "{tmp}/not-a-bundle", "list"], "not a usable profile database"),
    "status without a hub": (
        ["status", "--state-dir", "{tmp}/nonexistent"], "no hub status at"),
    "hub with a missing config": (
        ["hub", "-c", "{tmp}/missing.yaml"], "config error: {tmp}/missing.yaml: cannot read"),
    "es-setup with a bogus URL": (
        ["es-setup", "--hosts", "bogus"], "URL must include a 'scheme'"),
    "an option of the wrong type": (
        ["tap", "--count", "many"], "'many' is not a valid integer"),
    "an unknown option": (["tap", "--hots", "x"], "No such option '--hots'"),
    "fields of an unknown prefix": (["fields", "zzz."], "no field starts with 'zzz.'"),
    "replay --local of a base bundle": (
        ["replay", "{tmp}/events.jsonl", "--local", str(ROOT / "rules" / "default")],
        "is not a local layer"),
}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory, threatseer_cmd: list[str]) -> Path:
    tmp = tmp_path_factory.mktemp("cli-errors")
    (tmp / "not-a-bundle").write_text("hello\n")
    (tmp / "events.jsonl").write_text("")
    src = tmp / "src"
    (src / "rules").mkdir(parents=True)
    (src / "manifest.yaml").write_text("name: x\nversion: '1'\n")
    r = run(threatseer_cmd, "rules", "build", src, "-o", tmp / "bundle.tar.gz")
    assert r.returncode == 0, r.stderr
    return tmp


@pytest.mark.parametrize("case", sorted(CASES))
def test_each_mistake_is_one_line(case: str, workdir: Path, threatseer_cmd: list[str]) -> None:
    args, expected = CASES[case]
    port = str(free_port())
    fill = {"tmp": str(workdir), "port": port}
    proc = run(threatseer_cmd, *(a.format(**fill) for a in args), cwd=workdir)
    assert proc.returncode != 0, proc.stdout
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert expected.format(**fill) in lines[0], lines[0]


def test_an_unexpected_error_says_so_in_one_line_and_debug_shows_the_traceback(
        tmp_path: Path, threatseer_cmd: list[str]) -> None:
    """A bug (here: a profile database with the wrong tables) is one line naming the error;
    THREATSEER_DEBUG=1 gives the traceback to report."""
    import os
    import sqlite3

    db = tmp_path / "p.db"
    with sqlite3.connect(db) as con:
        con.execute("create table profiles (x text)")
    proc = run(threatseer_cmd, "profiles", "--db", db, "list")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "unexpected error (OperationalError: no such column" in proc.stderr
    assert "THREATSEER_DEBUG=1 shows the traceback" in proc.stderr
    debug = subprocess.run([*threatseer_cmd, "profiles", "--db", str(db), "list"],
                           capture_output=True, text=True, timeout=60,
                           env={**os.environ, "THREATSEER_DEBUG": "1"})
    assert debug.returncode != 0 and "Traceback" in debug.stderr
