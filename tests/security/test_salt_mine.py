"""Items 1 and 2: a minion owns its mine values; the formula must not run or trust them.

A salt-master and three minions on 127.0.0.1: ``aaa-evil`` (a fleet host the attacker is root
on: alphabetically first, a sensor by pillar), ``ts-hub`` (the hub by pillar) and
``ts-sensor``. The attacker edits its own key files and sends them to the mine, exactly as the
formula's states do: its "sensor key" carries a YAML state (``cmd.run``), its "hub key" is a
valid key of its own. Only rendering and the allow-list state are applied (no installs), so
the module takes seconds.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from salt_helpers import BIN, STATES, run_json, start_daemon, stop_daemon, wait_for

from tests.conftest import free_port
from threatseer.common.keys import curve_keypair, parse_key

pytestmark = pytest.mark.timeout(300)
EVIL, HUB, SENSOR = "aaa-evil", "ts-hub", "ts-sensor"


@dataclass
class Master:
    base: Path
    conf: Path
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def salt(self, target: str, *args: str, timeout: float = 120) -> Any:
        rc, out, err = run_json([str(BIN / "salt"), "-c", str(self.conf), "--out=json",
                                 "-t", str(int(timeout)), target, *args], timeout=timeout + 30)
        assert isinstance(out, dict) and target in out, f"rc={rc}: {out}\n{err[-2000:]}"
        return out[target]

    def root(self, minion: str) -> Path:
        return self.base / "roots" / minion

    def publish(self, minion: str, function: str, text: str) -> None:
        """What a root user on ``minion`` can do: put ``text`` in a file, mine.send it."""
        path = self.base / f"{minion}-{function}.txt"
        path.write_text(text)
        assert self.salt(minion, "mine.send", function, "mine_function=file.read",
                         str(path)) is True


@pytest.fixture(scope="module")
def master() -> Iterator[Master]:
    base = Path(tempfile.mkdtemp(prefix="ts-sec-salt-"))
    m = Master(base, base / "master-conf")
    try:
        pillar = base / "pillar"
        pillar.mkdir()
        # Roles come from the master's pillar; everything is written under a per-minion root.
        (pillar / "top.sls").write_text(yaml.safe_dump({"base": {
            "*": ["common"], EVIL: ["sensor"], SENSOR: ["sensor"], HUB: ["hub"]}}))
        (pillar / "common.sls").write_text(
            "threatseer:\n  root: " + str(base / "roots") + "/{{ grains.id }}\n"
            "  service: {manager: script}\n")
        (pillar / "sensor.sls").write_text("threatseer:\n  roles: [sensor]\n")
        (pillar / "hub.sls").write_text("threatseer:\n  roles: [hub]\n")
        publish_port, ret_port = free_port(), free_port()
        m.conf.mkdir()
        (m.conf / "master").write_text(yaml.safe_dump({
            "interface": "127.0.0.1", "publish_port": publish_port, "ret_port": ret_port,
            "root_dir": str(base / "master"), "auto_accept": True, "worker_threads": 3,
            "file_roots": {"base": [str(STATES)]}, "pillar_roots": {"base": [str(pillar)]}}))
        m.procs.append(start_daemon([str(BIN / "salt-master"), "-c", str(m.conf), "-l", "warning"],
                              base / "master.log"))
        for minion in (EVIL, HUB, SENSOR):
            conf = base / f"{minion}-conf"
            conf.mkdir()
            (conf / "minion").write_text(yaml.safe_dump({
                "id": minion, "master": "127.0.0.1", "master_port": ret_port,
                "root_dir": str(base / minion), "acceptance_wait_time": 1,
                "disable_modules": ["systemd_service"]}))
            m.procs.append(start_daemon([str(BIN / "salt-minion"), "-c", str(conf), "-l", "warning"],
                                  base / f"{minion}.log"))

        def all_up() -> bool:
            rc, out, _ = run_json([str(BIN / "salt"), "-c", str(m.conf), "--out=json", "-t",
                                   "5", "*", "test.ping"], timeout=40)
            return isinstance(out, dict) and all(out.get(x) is True for x in (EVIL, HUB, SENSOR))

        wait_for(all_up, 90, "three minions to answer", interval=1)
        for minion in (EVIL, HUB, SENSOR):  # the master caches each minion's pillar
            m.salt(minion, "saltutil.refresh_pillar", "wait=True")
        yield m
    finally:
        for proc in reversed(m.procs):
            stop_daemon(proc)
        shutil.rmtree(base, ignore_errors=True)


def test_a_minion_cannot_inject_a_state_into_the_hub_through_its_mine_value(
        master: Master) -> None:
    marker = master.base / "PWNED"
    sensor_key = curve_keypair()[1]
    evil_key = curve_keypair()[1]
    master.publish(SENSOR, "threatseer_sensor_pubkey", sensor_key + "\n")
    master.publish(EVIL, "threatseer_sensor_pubkey",
                   f"{evil_key}\npwn-state:\n  cmd.run:\n    - name: touch {marker}\n"
                   "pwn-tail:\n  test.nop:\n    - text: |")  # swallows the lines after it
    master.publish(HUB, "threatseer_hub_pubkey", curve_keypair()[1] + "\n")

    rendered = master.salt(HUB, "state.show_sls", "threatseer.config.hub")
    assert isinstance(rendered, dict), rendered
    assert "pwn-state" not in rendered
    assert all(sid.startswith("threatseer-") for sid in rendered), sorted(rendered)

    ret = master.salt(HUB, "state.sls_id", "threatseer-hub-allow-list", "threatseer.config.hub")
    assert all(v["result"] for v in ret.values()), ret
    allow = (master.root(HUB) / "etc/threatseer/sensors.allow").read_text().splitlines()
    keys = [line.split()[0] for line in allow if line and not line.startswith("#")]
    assert keys == [sensor_key]  # the evil minion's line is refused whole
    assert all(parse_key(k) for k in keys)
    assert any(line.startswith(f"# refused: {EVIL}") for line in allow), allow
    assert not marker.exists()


def test_sensors_trust_only_the_pinned_hub_key(master: Master) -> None:
    hub_key, evil_key = curve_keypair()[1], curve_keypair()[1]
    master.publish(HUB, "threatseer_hub_pubkey", hub_key + "\n")
    # A valid key of the attacker's own, from the alphabetically first minion.
    master.publish(EVIL, "threatseer_hub_pubkey", evil_key + "\n")

    rendered = master.salt(SENSOR, "state.show_sls", "threatseer.config.sensor")
    assert isinstance(rendered, dict), rendered
    assert "threatseer-sensor-hub-key-missing" not in rendered
    contents = next(arg["contents"] for arg in rendered["threatseer-sensor-config"]["file"]
                    if isinstance(arg, dict) and "contents" in arg)
    assert yaml.safe_load(contents)["curve_server_key"] == hub_key

    # The hub's own mine value is checked too: garbage there is refused, not written.
    master.publish(HUB, "threatseer_hub_pubkey", hub_key + "\nhub: tcp://evil:1\n")
    rendered = master.salt(SENSOR, "state.show_sls", "threatseer.config.sensor")
    missing = rendered["threatseer-sensor-hub-key-missing"]["test"]
    assert any("no valid hub public key" in str(a) for a in missing), missing


def test_sensors_trust_the_gateways_key_in_a_cluster(master: Master) -> None:
    """Sensors connect to a cluster's gateways (one shared key pair): the default target
    takes the hub key from minions whose pillar gives them the gateway role too."""
    pillar = master.base / "pillar" / "hub.sls"
    gateway_key = curve_keypair()[1]
    pillar.write_text("threatseer:\n  roles: [gateway, scorer]\n"
                      "  cluster: {bootstrap_servers: '127.0.0.1:9'}\n")
    try:
        master.salt(HUB, "saltutil.refresh_pillar", "wait=True")
        master.publish(HUB, "threatseer_hub_pubkey", gateway_key + "\n")
        rendered = master.salt(SENSOR, "state.show_sls", "threatseer.config.sensor")
        assert "threatseer-sensor-hub-key-missing" not in rendered, rendered
        contents = next(arg["contents"] for arg in rendered["threatseer-sensor-config"]["file"]
                        if isinstance(arg, dict) and "contents" in arg)
        assert yaml.safe_load(contents)["curve_server_key"] == gateway_key
    finally:
        pillar.write_text("threatseer:\n  roles: [hub]\n")
        master.salt(HUB, "saltutil.refresh_pillar", "wait=True")
