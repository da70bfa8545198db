"""The sandbox the corpus runs in: isolated, and nothing of a run outlives it."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest
from sandbox import RUN_ROOT, Sandbox

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="namespaces, mounts, cgroups")


def test_a_run_is_isolated_and_leaves_nothing_behind(tmp_path) -> None:
    marker = f"threatseer-sandbox-probe-{os.getpid()}"
    seen: dict[str, object] = {}

    def started(cgroup_id: int) -> None:
        seen.setdefault("cgroup", cgroup_id)

    run = Sandbox().run(f"""
        echo x > /etc/{marker}; echo x > /usr/local/bin/{marker}; echo x > /tmp/{marker}
        useradd -M {marker[:30]} 2>/dev/null
        (sleep 299.{os.getpid()} &)
        ip -o link | awk '{{print "LINK" $2}}'
        ip route get 1.1.1.1 2>&1 | head -1
        cat /proc/self/cgroup | grep '^0::'
    """, on_start=started)
    assert run.returncode == 0, run.output
    links = [x for x in run.output.split() if x.startswith("LINK")]
    assert links == ["LINKlo:"], run.output  # loopback only ...
    assert "unreachable" in run.output  # ... and nothing routes outside the namespace
    assert "threatseer-corpus-" in run.output  # the script ran inside the run's cgroup
    assert seen["cgroup"] == run.work_cgroup
    for path in (f"/etc/{marker}", f"/usr/local/bin/{marker}", f"/tmp/{marker}"):
        assert not Path(path).exists(), path
    assert marker[:30] not in Path("/etc/passwd").read_text()
    # the background sleep was killed with the run's cgroups, which are gone, and so is the
    # run's directory
    cgroups = {os.stat(p).st_ino for p in Path(Sandbox().cg_root).iterdir() if p.is_dir()}
    assert run.work_cgroup not in cgroups and run.infra_cgroup not in cgroups
    tag = run.output.split("0::/threatseer-corpus-")[1].split()[0]
    assert not (RUN_ROOT / tag).exists()
    assert not any(f"sleep 299.{os.getpid()}" in _cmdline(pid)
                   for pid in os.listdir("/proc") if pid.isdigit())


def test_a_hanging_script_is_killed_at_its_timeout() -> None:
    run = Sandbox().run("sleep 60", timeout=1.0)
    assert run.timed_out and run.returncode is None
    assert run.seconds < 10


def _cmdline(pid: str) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def test_kept_directories_stay_visible_read_only_under_the_fresh_tmp() -> None:
    """A checkout under /tmp (CI clones into mktemp -d) stays usable inside the sandbox."""
    kept = Path(tempfile.mkdtemp(prefix="ts-sandbox-keep-"))
    try:
        (kept / "inside").write_text("seen\n")
        run = Sandbox(keep=[str(kept), str(kept / "nested")]).run(f"""
            cat {kept}/inside
            touch {kept}/written 2>/dev/null && echo writable || echo read-only
            ls /tmp | grep -c . || true
        """)
        assert run.returncode == 0, run.output
        lines = run.output.split()
        assert lines == ["seen", "read-only", "1"], run.output  # /tmp: fresh but for it
        assert not (kept / "written").exists()
    finally:
        shutil.rmtree(kept, ignore_errors=True)
