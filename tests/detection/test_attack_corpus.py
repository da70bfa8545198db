"""Every attack behaviour of the corpus, run for real: it must raise an alert carrying one of
the rules it names (a known gap must be seen by the sensor and must not alert).

One sensor and hub serve the whole session (conftest.py); each behaviour runs in its own
loopback-only network namespace with overlaid system directories (sandbox.py), so what it
writes, adds or breaks disappears with it."""

from __future__ import annotations

import pytest
from corpus import attacks

ATTACKS = attacks()


def test_the_corpus_covers_every_tactic_with_at_least_80_behaviours() -> None:
    from corpus import TACTICS

    assert len(ATTACKS) >= 80
    assert {b.tactic for b in ATTACKS} == set(TACTICS)
    assert len({b.technique for b in ATTACKS}) >= 50


@pytest.mark.parametrize("behaviour", ATTACKS, ids=lambda b: b.id)
def test_attack_behaviour_alerts(detection, behaviour) -> None:
    outcome = detection.run(behaviour.script, behaviour.infra, behaviour.timeout)
    assert outcome.events, f"the sensor saw nothing of {behaviour.id}:\n{outcome.summary()}"
    fired = outcome.rules()
    if behaviour.gap:
        assert not fired & set(behaviour.expect), (
            f"{behaviour.id} is listed as a gap but {fired & set(behaviour.expect)} caught it: "
            "update the corpus")
        return
    assert outcome.alerts, f"{behaviour.id} raised no alert:\n{outcome.summary()}"
    assert fired & set(behaviour.expect), (
        f"{behaviour.id} alerted, but not with {behaviour.expect}:\n{outcome.summary()}")
