"""Run a script for real, isolated, and know which kernel events it caused.

Each run gets:

- a network namespace with only loopback up (nothing leaves the machine);
- a private mount namespace in which /etc, /root, /home, /usr, /var, /opt, /srv and /mnt are
  overlays over the host's directories (writes land in a tmpfs that disappears with the run)
  and /tmp, /var/tmp and /dev/shm are fresh tmpfs: the script may add a user, write
  /etc/ld.so.preload or install a package without touching the host;
- cgroups of its own in the unified (v2) hierarchy: ``infra`` for the scenario's props (a
  payload web server, a listener) started before the script, ``work`` for the script itself,
  and under it ``docker-<64 hex>.scope`` (``$TS_CONTAINER_CGROUP``) for a script that starts a
  container the way runc does. Every kernel event carries its process's cgroup v2 id
  (``threatseer.cgroup.id``), so the events of ``work`` and its container are exactly what the
  script did, whatever else runs on the machine.

Cleanup does not depend on the script: every process of both cgroups is killed
(``cgroup.kill``), the cgroups and the run's directory are removed, and the namespaces and
their mounts vanish with their last process.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

RUN_ROOT = Path("/run/threatseer-corpus")
OVERLAID = ("/etc", "/root", "/home", "/usr", "/var", "/opt", "/srv", "/mnt")
FRESH_TMPFS = ("/tmp", "/var/tmp", "/dev/shm")
# A clean, ordinary root environment (what a root login shell has).
ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "HOME": "/root", "USER": "root", "LOGNAME": "root", "SHELL": "/bin/bash",
    "LANG": "C.UTF-8", "TERM": "dumb",
}

SETUP = r"""
set -eu
SB=$1 INFRA_CG=$2 WORK_CG=$3 DIR=$4
mount -t tmpfs -o mode=0700 threatseer-sandbox "$SB"
for d in {overlaid}; do
    [ -d "$d" ] || continue
    mkdir -p "$SB/upper$d" "$SB/work$d"
    mount -t overlay threatseer-sandbox -o "lowerdir=$d,upperdir=$SB/upper$d,workdir=$SB/work$d" "$d"
done
i=0  # directories kept visible (read-only) under the fresh tmpfs: set aside first
while IFS= read -r k; do mkdir -p "$SB/keep$i"; mount --bind "$k" "$SB/keep$i"; i=$((i+1)); done < "$DIR/keep"
for d in {fresh}; do mount -t tmpfs -o mode=1777 threatseer-sandbox "$d"; done
i=0
while IFS= read -r k; do
    mkdir -p "$k"; mount --bind "$SB/keep$i" "$k"; mount -o remount,bind,ro "$k"; i=$((i+1))
done < "$DIR/keep"
ip link set lo up
cd /root
if [ -s "$DIR/infra.sh" ]; then
    (echo "$BASHPID" > "$INFRA_CG/cgroup.procs"; exec /bin/bash "$DIR/infra.sh") \
        >"$DIR/infra.out" 2>&1 </dev/null
fi
echo "$$" > "$WORK_CG/cgroup.procs"
exec /bin/bash "$DIR/workload.sh" >"$DIR/workload.out" 2>&1 </dev/null
""".replace("{overlaid}", " ".join(OVERLAID)).replace("{fresh}", " ".join(FRESH_TMPFS))


def cgroup2_root(mounts: str = "/proc/self/mounts") -> Path:
    """Where the unified (v2) cgroup hierarchy is mounted (/sys/fs/cgroup on v2-only hosts,
    /sys/fs/cgroup/unified on v1/v2 hybrids)."""
    with open(mounts) as f:
        for line in f:
            parts = line.split()
            if len(parts) > 2 and parts[2] == "cgroup2":
                return Path(parts[1])
    raise RuntimeError("no cgroup2 hierarchy is mounted")


class Cgroup:
    """A cgroup v2 directory of our own; ``id`` is what the kernel reports as cgroup id."""

    def __init__(self, root: Path, name: str) -> None:
        self.path = root / name
        self.path.mkdir()
        self.id = os.stat(self.path).st_ino

    def join(self) -> None:
        """Move the calling process in (used in a child before exec)."""
        with open(self.path / "cgroup.procs", "w") as f:
            f.write(str(os.getpid()))

    def pids(self) -> list[int]:
        try:
            return [int(x) for x in (self.path / "cgroup.procs").read_text().split()]
        except OSError:
            return []

    def remove(self, timeout: float = 10.0) -> None:
        """Kill every process in it, wait for them to go, remove the directory."""
        if not self.path.exists():
            return
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(OSError):
                (self.path / "cgroup.kill").write_text("1")
            if not self.pids():
                try:
                    self.path.rmdir()
                    return
                except OSError:
                    pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.path}: processes left after kill: {self.pids()}")
            time.sleep(0.02)


@dataclass
class Run:
    """One script run: its cgroup ids (the events' ``threatseer.cgroup.id``), exit status and
    output, and how long it took."""

    work_cgroup: int
    container_cgroup: int
    infra_cgroup: int
    returncode: int | None
    output: str
    infra_output: str
    seconds: float
    timed_out: bool


class Sandbox:
    """Runs scripts as described in the module docstring, one at a time."""

    def __init__(self, env: dict[str, str] | None = None, keep: Iterable[str] = ()) -> None:
        """``keep``: directories the scripts need (e.g. the interpreter of ``env``) that stay
        visible, read-only, where they would be hidden under a fresh tmpfs (a checkout under
        /tmp, as CI makes it)."""
        if os.geteuid() != 0:
            raise PermissionError("the sandbox needs root (namespaces, mounts, cgroups)")
        self.cg_root = cgroup2_root()
        self.env = env  # more environment for the scripts
        under = [os.path.abspath(k) for k in keep]
        under = sorted({k for k in under if any(k.startswith(d + "/") for d in FRESH_TMPFS)})
        # a directory inside another kept one comes with it
        self.keep = [k for k in under if not any(k.startswith(o + "/") for o in under)]

    def run(self, script: str, infra: str = "", timeout: float = 10.0,
            on_start: Callable[[int], None] | None = None,
            on_done: Callable[[Run, Cgroup], None] | None = None) -> Run:
        """Run ``script`` (bash) after ``infra`` (bash, may leave servers running); every
        process of both is gone when this returns. ``on_start(cgroup id)`` is called before
        the script starts; ``on_done(run, cgroup)`` after it ended, while its (empty) cgroup
        still exists, so a caller can run a marker process in it."""
        tag = uuid.uuid4().hex[:12]
        RUN_ROOT.mkdir(mode=0o700, exist_ok=True)
        rundir = RUN_ROOT / tag
        rundir.mkdir(mode=0o700)
        (rundir / "sb").mkdir()
        (rundir / "setup.sh").write_text(SETUP)
        (rundir / "workload.sh").write_text(script)
        (rundir / "infra.sh").write_text(infra)
        (rundir / "keep").write_text("".join(f"{k}\n" for k in self.keep))
        infra_cg = work_cg = container_cg = None
        try:
            infra_cg = Cgroup(self.cg_root, f"threatseer-corpus-{tag}-infra")
            work_cg = Cgroup(self.cg_root, f"threatseer-corpus-{tag}")
            env = {**ENV, **(self.env or {})}
            if "TS_CONTAINER_CGROUP" in script:  # it starts a container: give it a cgroup
                container_cg = Cgroup(work_cg.path,
                                      f"docker-{uuid.uuid4().hex}{uuid.uuid4().hex}.scope")
                env["TS_CONTAINER_CGROUP"] = str(container_cg.path)
            if on_start is not None:
                for cg in (work_cg, container_cg):
                    if cg is not None:
                        on_start(cg.id)
            started = time.monotonic()
            proc = subprocess.Popen(
                ["unshare", "--mount", "--net", "--propagation", "private", "/bin/bash",
                 str(rundir / "setup.sh"), str(rundir / "sb"), str(infra_cg.path),
                 str(work_cg.path), str(rundir)],
                env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE, start_new_session=True)
            timed_out = False
            try:
                _, err = proc.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:
                timed_out = True
                for cg in (container_cg, work_cg):
                    if cg is not None:
                        _kill_all(cg)
                proc.kill()
                _, err = proc.communicate()
            seconds = time.monotonic() - started
            infra_cg.remove()
            if container_cg is not None:
                container_cg.remove()
            _kill_all(work_cg)
            out = _read(rundir / "workload.out")
            if proc.returncode and not out and err:
                out = err.decode(errors="replace")  # the setup itself failed
            run = Run(work_cg.id, container_cg.id if container_cg else 0, infra_cg.id, None if timed_out else proc.returncode,
                      out, _read(rundir / "infra.out"), seconds, timed_out)
            if on_done is not None:
                on_done(run, work_cg)
            return run
        finally:
            for cg in (container_cg, work_cg, infra_cg):
                if cg is not None:
                    cg.remove()
            shutil.rmtree(rundir, ignore_errors=True)


def _kill_all(cg: Cgroup) -> None:
    """Kill what the script left running (background jobs), keep the cgroup."""
    deadline = time.monotonic() + 10
    while cg.pids():
        with contextlib.suppress(OSError):
            (cg.path / "cgroup.kill").write_text("1")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{cg.path}: processes left after kill: {cg.pids()}")
        time.sleep(0.02)


def _read(path: Path, limit: int = 4000) -> str:
    try:
        return path.read_text(errors="replace")[-limit:]
    except OSError:
        return ""
