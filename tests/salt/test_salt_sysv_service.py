"""service.manager sysv: Salt's own service module (debian_service; systemd_service is
disabled in the minion config, systemd not being PID 1 here) runs the formula's init script.

This is the one test that writes outside its test root: the init script must be in
/etc/init.d for the service module to find it. Its name is unique per run, boot links are
left alone (`enable: null`), and the teardown removes it whatever happens.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from salt_helpers import (
    LocalMinion,
    exited,
    local_minion,
    state_changes,
    state_failures,
    stop_leftovers,
    wait_for,
)

pytestmark = [pytest.mark.timeout(600),
              pytest.mark.skipif(not Path("/etc/debian_version").exists() or
                                 Path("/run/systemd/system").exists(),
                                 reason="needs Debian without systemd as PID 1")]
NAME = f"threatseer-sensor-test{os.getpid()}"
SCRIPT = Path("/etc/init.d") / NAME


@pytest.fixture(scope="module")
def minion(wheelhouse: Path, signing_key: Path) -> Iterator[LocalMinion]:
    base = Path(tempfile.mkdtemp(prefix="ts-salt-sysv-"))
    root = base / "root"
    try:
        yield local_minion(base, root, "ts-sysv", wheelhouse, signing_key, {
            "service": {"manager": "sysv", "initd_in_root": False, "enable": None},
            "sensor": {"service_name": NAME}})
    finally:
        stop_leftovers(root)
        SCRIPT.unlink(missing_ok=True)
        shutil.rmtree(base, ignore_errors=True)


def service(action: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["service", NAME, action], capture_output=True, text=True)


def test_service_running_starts_the_sensor_through_the_init_script(minion: LocalMinion) -> None:
    rc, ret, err = minion.apply("threatseer.keys.hub")  # the sensor's config needs its key
    assert rc == 0, err[-2000:]
    rc, ret, err = minion.apply("threatseer.sensor")
    assert rc == 0 and not state_failures(ret), state_failures(ret) or err[-2000:]
    running = [v for v in ret.values() if v["__id__"] == "threatseer-sensor-service"]
    assert running and running[0]["changes"] == {NAME: True}, running
    assert SCRIPT.exists() and os.access(SCRIPT, os.X_OK)
    status = service("status")
    assert status.returncode == 0, status.stdout + status.stderr
    assert str(minion.pid(NAME)) in status.stdout


def test_a_config_change_restarts_it_and_then_nothing_changes(minion: LocalMinion) -> None:
    pid = minion.pid(NAME)
    change = {"threatseer": {"sensor": {"config": {"batch_size": 256}}}}
    rc, ret, _ = minion.apply("threatseer.sensor", change)
    assert rc == 0 and not state_failures(ret), state_failures(ret)
    assert state_changes(ret) == ["threatseer-sensor-config", "threatseer-sensor-service"]
    assert minion.pid(NAME) != pid and service("status").returncode == 0
    rc, ret, _ = minion.apply("threatseer.sensor", change)
    assert rc == 0 and state_changes(ret) == []


def test_clean_stops_it_and_removes_the_script(minion: LocalMinion) -> None:
    pid = minion.pid(NAME)
    rc, ret, _ = minion.apply("threatseer.clean")
    assert rc == 0 and not state_failures(ret), state_failures(ret)
    wait_for(lambda: exited(pid), 10, f"sensor pid {pid} to exit")
    assert not SCRIPT.exists()
