"""Item 3 in a hub cluster: a gateway binds sensor ids to CURVE keys durably, as the hub does.

A real ``threatseer gateway`` (CURVE) in front of a real Kafka-protocol broker (tansu): the
victim's key sends as ``sensor-a`` and is acknowledged (Kafka has the batch); the gateway is
restarted; another allowed key then sends as ``sensor-a`` with the largest epoch. It must not
be stored nor acknowledged (it would make every later batch of the real sensor stale at the
scorers), and the refusal is counted. The real sensor-a is served as before.
"""

from __future__ import annotations

import signal

from cluster_helpers import Member, free_port, member_config, tansu_at
from security_helpers import WireSensor, exec_event
from transport_helpers import Keys, keypair, public

from threatseer.hub.cluster.gateway import BINDINGS_FILE


def test_a_restarted_gateway_keeps_sensor_ids_bound_to_their_keys(tmp_path) -> None:
    keys = Keys(tmp_path / "keys")
    attacker = keypair(tmp_path / "keys", "attacker")
    keys.allow.write_text(keys.allow.read_text() + f"{public(attacker[1]).decode()}  # b\n")
    broker = tansu_at(free_port(), tmp_path).start()
    try:
        cfg = member_config(tmp_path, broker.bootstrap, "gw")
        cfg.plaintext = False
        cfg.curve_secret_key_file = str(keys.hub[0])
        cfg.curve_allow_list = str(keys.allow)
        ep = cfg.ingest.endpoint
        gateway = Member("gateway", cfg, tmp_path)
        try:
            gateway.wait_ready()
            victim = WireSensor(ep, "sensor-a", keys.sensor[0], keys.hub[1])
            try:
                assert victim.wait_ack(victim.send([exec_event("sensor-a", 0)]), 60)
            finally:
                victim.close()
        finally:
            gateway.stop()
        assert (tmp_path / "gw" / BINDINGS_FILE).exists()

        gateway = Member("gateway", cfg, tmp_path)
        try:
            gateway.wait_ready()
            evil = WireSensor(ep, "sensor-a", attacker[0], keys.hub[1], epoch=(1 << 62))
            try:
                seq = evil.send([exec_event("sensor-a", 0)], seq=1)
                assert not evil.wait_ack(seq, 5.0), "a batch sent as another sensor was stored"
                # under its own name the attacker's key is served
                seq = evil.send([exec_event("b", 0)], seq=1, sensor_id="b", epoch=1)
                assert evil.wait_ack(seq, 60, epoch=1)
            finally:
                evil.close()
            victim = WireSensor(ep, "sensor-a", keys.sensor[0], keys.hub[1])
            try:
                # (seq 1 again: a restarted gateway acknowledges runs from the start)
                assert victim.wait_ack(victim.send([exec_event("sensor-a", 1)], seq=1), 60)
            finally:
                victim.close()
        finally:
            gateway.stop()
        log = gateway.log.read_text()
        assert "sensor sensor-a: spoofed" in log, log[-2000:]
    finally:
        broker.stop(signal.SIGKILL)
