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


def test_kill_rules_are_not_ignored_silently_by_cluster_roles(caplog) -> None:
    """The cluster roles do not carry out kills (only a single hub does): a config that asks
    for them says so in a log line at start."""
    from threatseer.hub.cluster.cli import warn_unsupported

    cfg = configfile.from_dict({"cluster": {"bootstrap_servers": "k1:9092"},
                                "response": {"kill_rules": {"miner": "kill"}}},
                               HubConfig, "hub.yaml")
    with caplog.at_level("WARNING", logger="threatseer.hub.cluster"):
        assert warn_unsupported("scorer", cfg) is not None
        assert warn_unsupported("output-worker", cfg) is None
        assert warn_unsupported("scorer", _cluster()) is None
    assert [r.getMessage().split(":")[0] for r in caplog.records] == ["scorer"]
    assert "only alert" in caplog.records[0].getMessage()
