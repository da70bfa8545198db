"""Helpers of the Salt tests: building bundles, pillars, running salt, stopping leftovers.

Test files import this as ``salt_helpers`` (conftest.py puts this folder on sys.path).

Every daemon gets its own config dir and ``root_dir`` under a temp dir; the formula writes
into a per-minion test root (pillar ``threatseer:root``), so nothing lands under /etc.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tests.conftest import free_port

ROOT = Path(__file__).resolve().parents[2]
STATES = ROOT / "states"
BIN = Path(sys.executable).parent
SALT_CALL = str(BIN / "salt-call")
THREATSEER = str(BIN / "threatseer")
# The interpreter the minions build their venvs from: the one that built the wheels.
BASE_PYTHON = getattr(sys, "_base_executable", sys.executable)


def build_bundle(work: Path, version: str, key: Path | None, out_dir: Path,
                 name: str = "default") -> Path:
    """Build ``<out_dir>/<name>-<version>.tar.gz`` with the rules CLI, signed with ``key``."""
    src = work / f"bundle-{version}"
    src.mkdir(parents=True, exist_ok=True)
    (src / "manifest.yaml").write_text(
        yaml.safe_dump({"name": name, "version": version, "description": "salt test"}))
    out = out_dir / f"{name}-{version}.tar.gz"
    out_dir.mkdir(parents=True, exist_ok=True)
    subprocess.run([THREATSEER, "rules", "build", str(src), "-o", str(out)], check=True,
                   capture_output=True)
    if key is not None:
        subprocess.run([THREATSEER, "rules", "sign", str(out), "-k", str(key)], check=True,
                       capture_output=True)
    return out


LOCAL_RULE = """\
rules:
  - rule: site_marker_{version}
    description: the local layer's own rule
    condition: event.action = exec and process.name = site-marker
    score: 1
    tests:
      match: [{{event.action: exec, process.name: site-marker}}]
"""


def build_local_layer(work: Path, version: str, key: Path | None, out_dir: Path,
                      name: str = "local", base: str = "default") -> Path:
    """Build ``<out_dir>/<name>-<version>.tar.gz``: a local layer (one rule of its own) for
    the base bundle ``base``, signed with ``key``."""
    src = work / f"local-{version}"
    (src / "rules").mkdir(parents=True, exist_ok=True)
    (src / "manifest.yaml").write_text(yaml.safe_dump(
        {"name": name, "version": version, "layer": "local", "base": base}))
    (src / "rules" / "site.yaml").write_text(LOCAL_RULE.format(version=version.replace(".", "_")))
    out = out_dir / f"{name}-{version}.tar.gz"
    subprocess.run([THREATSEER, "rules", "build", str(src), "-o", str(out), "--base",
                    str(build_base_dir(work, base))], check=True, capture_output=True)
    if key is not None:
        subprocess.run([THREATSEER, "rules", "sign", str(out), "-k", str(key)], check=True,
                       capture_output=True)
    return out


def build_base_dir(work: Path, name: str) -> Path:
    """An empty base bundle directory named ``name`` (what build_bundle archives)."""
    src = work / f"base-{name}"
    src.mkdir(parents=True, exist_ok=True)
    (src / "manifest.yaml").write_text(yaml.safe_dump({"name": name, "version": "0"}))
    return src


def make_file_root(base: Path, wheelhouse: Path) -> Path:
    """A second file root holding salt://threatseer/files (the wheels) and .../bundles."""
    root = base / "fileroot"
    files = root / "threatseer" / "files"
    files.mkdir(parents=True)
    for whl in wheelhouse.iterdir():
        os.symlink(whl, files / whl.name)
    (root / "threatseer" / "bundles").mkdir()
    return root


def write_pillar(pillar_root: Path, data: dict[str, Any], name: str = "threatseer") -> None:
    pillar_root.mkdir(parents=True, exist_ok=True)
    (pillar_root / f"{name}.sls").write_text(yaml.safe_dump(data, sort_keys=False))


def base_pillar(root: Path, ports: dict[str, int], signing_pub: str = "") -> dict[str, Any]:
    """Pillar for one minion's test root: script-managed services, hub as root (no user)."""
    return {"threatseer": {
        # Every test minion runs a sensor and may be the hub (the mine targets select by role).
        "roles": ["sensor", "hub"],
        "root": str(root),
        "python": BASE_PYTHON,
        "manage_pkgs": True,
        "install": {"no_index": True},
        "service": {"manager": "script", "stop_timeout": 10},
        "sensor": {"config": {"hub": f"tcp://127.0.0.1:{ports['ingest']}",
                              "sensor_id": "${minion_id}", "health_interval_s": 1.0,
                              "sensitive_paths": ["/etc/shadow", "${root}/watched/"]}},
        "hub": {"user": "root", "group": "root", "manage_user": False,
                "config": {"ingest": {"endpoint": f"tcp://127.0.0.1:{ports['ingest']}"},
                           "publish": {"endpoint": f"tcp://127.0.0.1:{ports['publish']}"},
                           "metrics": {"listen": ""}}},
        "rules": {"admin_endpoint": f"tcp://127.0.0.1:{ports['admin']}",
                  "signing_public_key": signing_pub},
    }}


def state_changes(ret: dict[str, Any]) -> list[str]:
    """Ids of the states in one minion's state return that changed something."""
    return sorted(v["__id__"] for v in ret.values() if isinstance(v, dict) and v.get("changes"))


def state_failures(ret: Any) -> list[str]:
    if not isinstance(ret, dict):
        return [str(ret)]
    return sorted(f"{v['__id__']}: {v.get('comment')}" for v in ret.values()
                  if isinstance(v, dict) and not v.get("result"))


def run_json(cmd: list[str], timeout: float = 300) -> tuple[int, Any, str]:
    """Run a salt command with --out=json; return (exit status, parsed output, stderr)."""
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    return proc.returncode, parse_json_stream(proc.stdout), proc.stderr


def parse_json_stream(text: str) -> Any:
    """The `salt` CLI prints one JSON document per minion as they return: merge them (a
    single document, e.g. from salt-call, comes back as is; non-JSON as the raw text)."""
    decoder, docs, pos = json.JSONDecoder(), [], 0
    try:
        while pos < len(text.rstrip()):
            while text[pos].isspace():
                pos += 1
            doc, pos = decoder.raw_decode(text, pos)
            docs.append(doc)
    except (ValueError, IndexError):
        return text
    if len(docs) == 1 or not all(isinstance(d, dict) for d in docs):
        return docs[0] if len(docs) == 1 else docs or None
    merged: dict[str, Any] = {}
    for doc in docs:
        merged.update(doc)
    return merged


def start_daemon(cmd: list[str], log: Path) -> subprocess.Popen[bytes]:
    """A Salt daemon in a session of its own (so :func:`stop_daemon` ends its workers too),
    its output appended to ``log``."""
    with open(log, "ab") as out:
        return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)


def stop_daemon(proc: subprocess.Popen[bytes]) -> None:
    """End a daemon we started and everything in its process group (salt's workers)."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=15)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)  # leftover workers of the group
    proc.wait(timeout=5)


def stop_leftovers(*roots: Path) -> None:
    """Stop every daemon a formula run left in these test roots (pidfiles), even after a
    failed test; the init scripts may be gone, so signal the pids directly."""
    for root in roots:
        for pidfile in root.glob("run/threatseer/*.pid"):
            try:
                pid = int(pidfile.read_text().strip())
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            except (OSError, ValueError):
                continue
            if str(root).encode() not in cmdline:
                continue  # a reused pid: not ours
            os.kill(pid, signal.SIGTERM)
            for _ in range(50):
                if not Path(f"/proc/{pid}").exists():
                    break
                time.sleep(0.1)
            else:
                os.kill(pid, signal.SIGKILL)


def wait_for(predicate: Any, timeout: float, what: str, interval: float = 0.25) -> Any:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def exited(pid: int) -> bool:
    """The process is gone, or has exited and only waits for PID 1 to reap it (a zombie)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return True
    return "\nState:\tZ" in status


def hub_status(root: Path) -> dict[str, Any]:
    try:
        return json.loads((root / "var/lib/threatseer/hub/status.json").read_text())
    except (OSError, ValueError):
        return {}


@dataclass
class LocalMinion:
    base: Path
    conf: Path
    root: Path
    pillar: Path
    bundles: Path
    data: dict[str, Any]

    def apply(self, sls: str, pillar: dict[str, Any] | None = None) -> tuple[int, dict, str]:
        cmd = [SALT_CALL, "-c", str(self.conf), "--local", "--retcode-passthrough",
               "--out=json", "state.apply", sls]
        if pillar:
            cmd.append("pillar=" + json.dumps(pillar))
        rc, out, err = run_json(cmd)
        assert isinstance(out, dict) and "local" in out, f"rc={rc}\n{out}\n{err[-3000:]}"
        return rc, out["local"], err

    def call(self, *args: str) -> Any:
        rc, out, err = run_json([SALT_CALL, "-c", str(self.conf), "--local", "--out=json",
                                 *args])
        assert rc == 0, err[-2000:]
        return out["local"]

    def initd(self, name: str, action: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(self.root / "etc/init.d" / name), action],
                              capture_output=True, text=True)

    def pid(self, name: str) -> int:
        return int((self.root / "run/threatseer" / f"{name}.pid").read_text())


def local_minion(base: Path, root: Path, minion_id: str, wheelhouse: Path, signing_key: Path,
                 pillar_extra: dict[str, Any] | None = None) -> LocalMinion:
    """A `salt-call --local` minion: own config dir, root_dir, file and pillar roots, test
    root; bundle 1.0.0 signed with ``signing_key`` on its file root and pinned."""
    conf, pillar = base / "conf", base / "pillar"
    conf.mkdir()
    file_root = make_file_root(base, wheelhouse)
    ports = {"ingest": free_port(), "publish": free_port(), "admin": free_port()}
    data = base_pillar(root, ports, Path(f"{signing_key}.pub").read_text().strip())
    data["threatseer"]["rules"]["version"] = "1.0.0"
    for key, value in (pillar_extra or {}).items():
        data["threatseer"].setdefault(key, {}).update(value)
    write_pillar(pillar, data)
    (pillar / "top.sls").write_text("base:\n  '*':\n    - threatseer\n")
    (conf / "minion").write_text(yaml.safe_dump({
        "id": minion_id, "file_client": "local", "root_dir": str(base / "salt"),
        "file_roots": {"base": [str(STATES), str(file_root)]},
        "pillar_roots": {"base": [str(pillar)]},
        "disable_modules": ["systemd_service"],
        "fileserver_list_cache_time": 0,  # see files a test adds to the file root at once
    }))
    bundles = file_root / "threatseer" / "bundles"
    build_bundle(base / "work", "1.0.0", signing_key, bundles)
    return LocalMinion(base, conf, root, pillar, bundles, data)
