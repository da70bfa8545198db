"""Item 3 in a hub cluster: the sensor id <-> CURVE key bindings are shared by every gateway.

Real ``threatseer gateway`` processes (CURVE) on a real Kafka-protocol broker (tansu). A key
that bound ``sensor-a`` at gateway 1 cannot take it at gateway 2, nor at a gateway started
later (the bindings live in Kafka, not in a gateway); and two gateways that see one new id from
two keys at the same moment give it to one key only, the same one at both.
"""

from __future__ import annotations

import signal
import time

from cluster_helpers import Member, curve_member_config, free_port, member_config, tansu_at
from security_helpers import WireSensor, exec_event
from transport_helpers import Keys, keypair, public

from threatseer.hub.cluster.bindings import SharedBindings


def test_a_sensor_id_bound_at_one_gateway_cannot_be_taken_at_another(tmp_path) -> None:
    keys = Keys(tmp_path / "keys")
    attacker = keypair(tmp_path / "keys", "attacker")
    keys.allow.write_text(keys.allow.read_text() + f"{public(attacker[1]).decode()}  # b\n")
    broker = tansu_at(free_port(), tmp_path).start()
    gateways: list[Member] = []
    try:
        cfg1 = curve_member_config(tmp_path, broker.bootstrap, "gw1", keys)
        cfg2 = curve_member_config(tmp_path, broker.bootstrap, "gw2", keys)
        gateways += [Member("gateway", cfg1, tmp_path), Member("gateway", cfg2, tmp_path)]
        for gw in gateways:
            gw.wait_ready()
        ep1, ep2 = cfg1.ingest.endpoint, cfg2.ingest.endpoint

        victim = WireSensor(ep1, "sensor-a", keys.sensor[0], keys.hub[1])
        try:
            assert victim.wait_ack(victim.send([exec_event("sensor-a", 0)]), 60)
        finally:
            victim.close()

        # The attacker's key never sent through gateway 1; at gateway 2 it claims sensor-a
        # (right away: gateway 2 may not have read gateway 1's claim yet, the log decides),
        # then with the largest epoch (which would make the real sensor's batches stale).
        evil = WireSensor(ep2, "sensor-a", attacker[0], keys.hub[1])
        try:
            seq = evil.send([exec_event("sensor-a", 0)], seq=1)
            assert not evil.wait_ack(seq, 5.0), "gateway 2 stored a batch of another key's id"
            seq = evil.send([exec_event("sensor-a", 1)], seq=1, epoch=1 << 62)
            assert not evil.wait_ack(seq, 3.0, epoch=1 << 62)
            # under a name of its own the attacker's key is served
            assert evil.wait_ack(evil.send([exec_event("b", 0)], seq=1, sensor_id="b",
                                           epoch=1), 60, epoch=1)
        finally:
            evil.close()

        # The real sensor fails over to gateway 2 and is served there (its go-back resends
        # from seq 1: a gateway acknowledges runs from the sender's base or its last ack).
        victim = WireSensor(ep2, "sensor-a", keys.sensor[0], keys.hub[1])
        try:
            assert victim.wait_ack(victim.send([exec_event("sensor-a", 1)], seq=1), 60)
        finally:
            victim.close()

        log2 = (tmp_path / "gw2.log").read_text()
        assert "sensor sensor-a: spoofed" in log2, log2[-2000:]

        # Gateway 2 restarted (nothing of its own kept: its state_dir is wiped) still knows.
        gateways[1].stop()
        for f in (tmp_path / "gw2").glob("*"):
            if f.is_file():
                f.unlink()
        gateways[1] = Member("gateway", cfg2, tmp_path)
        gateways[1].wait_ready()
        evil = WireSensor(ep2, "sensor-a", attacker[0], keys.hub[1], epoch=(1 << 62))
        try:
            assert not evil.wait_ack(evil.send([exec_event("sensor-a", 2)], seq=1), 5.0)
        finally:
            evil.close()
    finally:
        for gw in gateways:
            gw.stop()
        broker.stop(signal.SIGKILL)


def test_two_gateways_claiming_one_id_at_once_agree_on_one_key(tmp_path) -> None:
    """The race itself, made certain: both gateways' bindings write their claim before
    either has read the other's. One key wins, at both and at a gateway started later."""
    broker = tansu_at(free_port(), tmp_path).start()
    members: list[SharedBindings] = []
    try:
        ccfg = member_config(tmp_path, broker.bootstrap, "x").cluster
        from threatseer.hub.cluster.kafka import ensure_topics

        ensure_topics(ccfg)
        one, two = SharedBindings(ccfg, "gw1"), SharedBindings(ccfg, "gw2")
        members += [one, two]
        key_a, key_b = "A" * 40, "B" * 40
        one.bind("contested", key_a)
        two.bind("contested", key_b)
        # each gateway, meanwhile, takes the id as its own claim made it
        assert one.keys["contested"] == key_a and two.keys["contested"] == key_b

        decided: dict[str, bool] = {}
        deadline = time.monotonic() + 60
        while len(decided) < 2 and time.monotonic() < deadline:
            for name, b in (("gw1", one), ("gw2", two)):
                for sid, won, _claim in b.poll():
                    assert sid == "contested"
                    decided[name] = won
            time.sleep(0.02)
        assert len(decided) == 2, "the claims were not read back"
        assert sorted(decided.values()) == [False, True], decided
        winner = key_a if decided["gw1"] else key_b
        loser = key_b if winner == key_a else key_a
        for b in (one, two):
            assert b.keys["contested"] == winner and loser not in b.ids

        late = SharedBindings(ccfg, "gw3")
        members.append(late)
        assert late.keys == {"contested": winner}
        # the loser's key is free for an id of its own
        late.bind("other", loser)
        deadline = time.monotonic() + 60
        got: list = []
        while not got and time.monotonic() < deadline:
            got = late.poll()
            time.sleep(0.02)
        assert [(sid, won) for sid, won, _ in got] == [("other", True)]
    finally:
        for b in members:
            b.close()
        broker.stop(signal.SIGKILL)
