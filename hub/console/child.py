"""The hub's console in a process of its own, started and watched by the hub.

Why a process and not a thread of the hub: the console reads every published event (to keep
the process trees and the fleet's figures), and in the hub's interpreter that work would
share the GIL with the one pipeline thread, costing it about as much CPU again per event.
In its own process it runs on another core; the hub only hands each PUB message, already
packed, to a PAIR socket on a private ``ipc://`` path (in a 0700 directory), never waiting
for it (:meth:`threatseer.hub.publish.Publisher.add_tap`).

The child gets its settings as one JSON line on stdin and keeps stdin open: when the hub
goes away, even by ``kill -9``, the pipe closes and the child stops, so it never outlives the
hub holding the console's port. It answers ``ready URL`` (or ``error WHY``) on stdout and logs
to the hub's stderr.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any

from threatseer.hub.console.config import ConsoleConfig

log = logging.getLogger("threatseer.hub.console")
START_TIMEOUT_S = 30.0
RESTART_AFTER_S = 10.0  # a console that died is started again, at most this often


class ConsoleProcess:
    """The hub's handle on its console process."""

    def __init__(self, cfg: ConsoleConfig, state_dir: str, profile_db: str | None,
                 log_level: str = "info") -> None:
        self.cfg = cfg
        self.state_dir = state_dir
        self.profile_db = profile_db
        self.log_level = log_level
        self.dir = tempfile.mkdtemp(prefix="ts-console-")  # 0700: the feed is ours only
        self.endpoint = f"ipc://{self.dir}/feed"
        self.url = ""
        self.proc: subprocess.Popen[str] | None = None
        self.restarts = 0
        self._last_start = 0.0
        self._lock = threading.Lock()

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def start(self, timeout: float = START_TIMEOUT_S) -> None:
        """Start the child and wait until it serves (RuntimeError saying why not)."""
        spec = {"console": dataclasses.asdict(self.cfg), "endpoint": self.endpoint,
                "state_dir": self.state_dir, "profile_db": self.profile_db,
                "log_level": self.log_level}
        self._last_start = time.monotonic()
        proc = subprocess.Popen([sys.executable, "-m", "threatseer.hub.console.child"],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                start_new_session=True)  # a terminal's Ctrl-C is the hub's
        assert proc.stdin is not None and proc.stdout is not None
        self.proc = proc
        proc.stdin.write(json.dumps(spec) + "\n")
        proc.stdin.flush()
        ready, _, _ = select.select([proc.stdout], [], [], timeout)
        line = proc.stdout.readline().strip() if ready else ""
        if not line.startswith("ready "):
            self._end()
            raise RuntimeError(line.removeprefix("error ") or "the console did not start in "
                               f"{timeout:g}s")
        self.url = line.split(" ", 1)[1]

    def watch(self) -> None:
        """Start the console again if it died (called every few seconds by the hub)."""
        with self._lock:
            proc = self.proc
            if proc is None or proc.poll() is None:
                return
            if time.monotonic() - self._last_start < RESTART_AFTER_S:
                return
            log.error("console process %d exited with status %s: starting it again",
                      proc.pid, proc.returncode)
            try:
                self.start()
                self.restarts += 1
            except Exception as exc:
                log.error("console could not start again: %s", exc)

    def stop(self, timeout: float = 10.0) -> None:
        with self._lock:
            self._end(timeout)
            shutil.rmtree(self.dir, ignore_errors=True)

    def _end(self, timeout: float = 10.0) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for pipe in (proc.stdin, proc.stdout):
            with contextlib.suppress(OSError):
                if pipe is not None:
                    pipe.close()


def main() -> None:
    """The child: read the settings, serve, stop on SIGTERM or when stdin closes."""
    spec: dict[str, Any] = json.loads(sys.stdin.readline())
    logging.basicConfig(level=getattr(logging, spec.get("log_level", "info").upper()),
                        stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from threatseer.common.configfile import from_dict
    from threatseer.hub.console.runner import Console
    from threatseer.hub.console.server import Sources

    cfg = from_dict(spec["console"], ConsoleConfig, source="console")
    sources = Sources("hub", spec["state_dir"], spec["profile_db"])
    console = Console(cfg, spec["endpoint"], sources, tap=True,
                      on_ready=lambda url: print(f"ready {url}", flush=True))

    def parent_gone() -> None:  # EOF on stdin: the hub is gone
        sys.stdin.read()
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=parent_gone, daemon=True).start()
    try:
        console.run()
    except Exception as exc:
        if not console.url:
            print(f"error {exc}", flush=True)
        raise SystemExit(1) from None
    finally:  # the feed's private directory, also when the hub could not remove it
        folder = os.path.dirname(spec["endpoint"].removeprefix("ipc://"))
        if os.path.basename(folder).startswith("ts-console-"):
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
