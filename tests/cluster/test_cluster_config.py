"""The cluster section's checks that need no broker."""

from __future__ import annotations

import pytest

from threatseer.common import configfile
from threatseer.hub.config import HubConfig


def _cluster(**cluster: object) -> HubConfig:
    return configfile.from_dict({"cluster": {"bootstrap_servers": "k1:9092", **cluster}},
                                HubConfig, "hub.yaml")


def test_events_compression_is_one_librdkafka_knows() -> None:
    assert _cluster().cluster.events_compression == "lz4"
    assert _cluster(events_compression="none").cluster.events_compression == "none"
    with pytest.raises(configfile.ConfigError) as err:
        _cluster(events_compression="brotli")
    assert "cluster.events_compression" in str(err.value)
    assert "lz4" in str(err.value) and "\n" not in str(err.value)


def test_a_scorer_says_exec_rules_kill_after_the_exec_in_a_cluster(caplog) -> None:
    """Kills work in a cluster (tests/cluster/test_cluster_kill.py), but sensors get no exec
    policy from it: a scorer whose config allows kills says, in one line at start, that exec
    rules kill after the exec there."""
    from threatseer.hub.cluster.cli import note_exec_rules

    cfg = configfile.from_dict({"cluster": {"bootstrap_servers": "k1:9092"},
                                "response": {"kill_rules": {"miner": "kill"}}},
                               HubConfig, "hub.yaml")
    with caplog.at_level("INFO", logger="threatseer.hub.cluster"):
        assert note_exec_rules("scorer", cfg) is not None
        assert note_exec_rules("gateway", cfg) is None
        assert note_exec_rules("output-worker", cfg) is None
        assert note_exec_rules("scorer", _cluster()) is None
    assert [r.getMessage().split(":")[0] for r in caplog.records] == ["scorer"]
    assert "after the exec" in caplog.records[0].getMessage()


def test_command_max_age_is_checked() -> None:
    assert _cluster().cluster.command_max_age_s == 5.0
    with pytest.raises(configfile.ConfigError) as err:
        _cluster(command_max_age_s=0)
    assert "cluster.command_max_age_s" in str(err.value)
