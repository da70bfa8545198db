"""Item 8: SIGHUP (systemd's ExecReload, the init script's reload) reloads the hub instead of
killing it, and the unit restarts the hub whatever ends it.

A real hub process with CURVE: after SIGHUP it reads a new allow-list path (a new sensor key
is served), starts a file output and takes the new log level; a config with an error is
refused and the hub goes on as it was.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import jinja2
import yaml
from security_helpers import WireSensor, exec_event, file_output, read_events
from transport_helpers import HubProc, Keys, hub_cfg, keypair, public, wait_for

STATES = Path(__file__).resolve().parents[2] / "states" / "threatseer"


def _hup(hub: HubProc, cfg: dict, marker: str) -> None:
    offset = len(hub.log_text())
    hub.config.write_text(yaml.safe_dump(cfg))
    hub.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: marker in hub.log_text()[offset:], 10, marker)
    assert hub.proc.poll() is None


def test_sighup_reloads_allow_list_outputs_and_log_level(tmp_path, procs) -> None:
    keys = Keys(tmp_path / "keys")
    cfg = hub_cfg(tmp_path, keys)
    hub = HubProc(tmp_path, cfg).start()
    procs.append(hub)
    ep = cfg["ingest"]["endpoint"]
    newcomer = keypair(tmp_path / "keys", "newcomer")
    other_list = tmp_path / "keys" / "fleet-2.allow"
    other_list.write_text(keys.allow.read_text() + f"{public(newcomer[1]).decode()}  # n\n")
    out = tmp_path / "out" / "events.jsonl"
    cfg.update(curve_allow_list=str(other_list), outputs=[file_output(out)], log_level="debug")
    _hup(hub, cfg, "reloaded the configuration")

    sensor = WireSensor(ep, "n", newcomer[0], keys.hub[1])
    try:
        assert sensor.wait_ack(sensor.send([exec_event("n", 0)]), 15)
        # a broken file: refused, the hub goes on with what it runs
        hub.config.write_text("ingest: [\n")
        offset = len(hub.log_text())
        hub.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: "reload refused" in hub.log_text()[offset:], 10, "the refusal")
        time.sleep(0.3)
        assert hub.proc.poll() is None
        assert sensor.wait_ack(sensor.send([exec_event("n", 1)]), 15)
    finally:
        sensor.close()
    got = wait_for(lambda: len(read_events(out)) >= 2 and read_events(out), 10, "the output")
    assert {e["event.id"] for e in got} == {"n:t-0", "n:t-1"}
    assert " DEBUG " in hub.log_text()
    assert hub.stop() == 0


def test_the_units_restart_the_hub_whatever_ends_it() -> None:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(STATES / "files")))
    unit = env.get_template("unit.service.jinja").render(
        description="threatseer hub", docs="/d", daemon="/opt/threatseer/bin/threatseer",
        args="hub -c /etc/threatseer/hub.yaml", stop_timeout=15, user="threatseer",
        group="threatseer", capabilities=[], rw_paths=["/var/lib/threatseer"], role="hub")
    lines = unit.splitlines()
    assert "Restart=always" in lines and "ExecReload=/bin/kill -HUP $MAINPID" in lines
