"""Item 11: the sensor gives up what it no longer needs once its programs are attached.

The real ``threatseer sensor`` (eBPF) run as root with every capability: after start it holds
only CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH (and no_new_privs), and still does everything it
does for the rest of its life on this kernel: it hashes an executable only root can read, run
by another user (nobody); it applies a new path filter on SIGHUP (a map update without
CAP_BPF); it stops cleanly, detaching its programs. The old sensor kept CAP_BPF, CAP_PERFMON,
CAP_SYS_RESOURCE and the rest, as root, for its whole life.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import pytest
import yaml
from transport_helpers import THREATSEER, Collector, HubProc, hub_cfg, wait_for

KEPT = (1 << 2) | (1 << 19)  # CAP_DAC_READ_SEARCH, CAP_SYS_PTRACE


def _caps(pid: int) -> dict[str, str]:
    status = Path(f"/proc/{pid}/status").read_text()
    return dict(line.split(":\t", 1) for line in status.splitlines() if ":\t" in line)


def test_the_sensor_keeps_only_what_it_uses(tmp_path, procs) -> None:
    if os.geteuid() != 0:
        pytest.skip("the sensor needs root for eBPF")
    # A directory nobody may enter, holding a copy of /bin/true only its owner (root) may read.
    scratch = Path(tempfile.mkdtemp(prefix="ts-sec-caps-"))
    try:
        scratch.chmod(0o711)
        exe = scratch / f"only-root-reads-{uuid.uuid4().hex[:6]}"
        shutil.copy2("/bin/true", exe)
        exe.chmod(0o711)
        digest = hashlib.sha256(exe.read_bytes()).hexdigest()
        later = scratch / "later"
        later.mkdir()
        (later / "f").write_text("x")
        cfg = hub_cfg(tmp_path, None)
        hub = HubProc(tmp_path, cfg).start()
        procs.append(hub)
        sub = Collector(cfg["publish"]["endpoint"])
        scfg = tmp_path / "sensor.yaml"
        base = {"hub": cfg["ingest"]["endpoint"], "sensor_id": "caps", "plaintext": True,
                "state_dir": str(tmp_path / "sensor"), "batch_latency_ms": 20,
                "health_interval_s": 1.0, "sensitive_paths": ["/etc/shadow"]}
        scfg.write_text(yaml.safe_dump(base))
        log = tmp_path / "sensor.log"
        with open(log, "w") as err:
            sensor = subprocess.Popen([*THREATSEER, "sensor", "-c", str(scfg)],
                                      stdout=subprocess.DEVNULL, stderr=err)
        procs.append(sensor)
        try:
            wait_for(lambda: "privileges: kept" in log.read_text() or sensor.poll() is not None,
                     60, "the sensor to attach and drop")
            assert sensor.poll() is None, log.read_text()
            caps = _caps(sensor.pid)
            assert int(caps["CapEff"], 16) == KEPT, caps["CapEff"]
            assert int(caps["CapPrm"], 16) == KEPT, caps["CapPrm"]
            assert int(caps["CapBnd"], 16) == KEPT, caps["CapBnd"]
            assert int(caps["CapInh"], 16) == int(caps["CapAmb"], 16) == 0
            assert caps["NoNewPrivs"].strip() == "1"

            def hashed() -> list:
                subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                                str(exe)], check=True)
                time.sleep(0.3)
                return [e for e in sub.events if e.get("process.executable") == str(exe)
                        and e.get("process.hash.sha256")]

            got = wait_for(hashed, 30, "the exec by nobody, hashed")
            assert got[0]["process.hash.sha256"] == digest
            assert got[0]["user.id"] in (65534, "65534")

            base["sensitive_paths"] = ["/etc/shadow", f"{later}/"]
            scfg.write_text(yaml.safe_dump(base))
            sensor.send_signal(signal.SIGHUP)

            def opened() -> bool:
                (later / "f").read_text()
                time.sleep(0.3)
                return any(e.get("file.path") == str(later / "f") for e in sub.events)

            wait_for(opened, 30, "an open under the path added by SIGHUP")
            sensor.send_signal(signal.SIGTERM)
            assert sensor.wait(30) == 0, log.read_text()[-3000:]
            assert "Traceback" not in log.read_text()
        finally:
            sub.close()
        assert hub.stop() == 0
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
