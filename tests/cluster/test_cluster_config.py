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


def test_command_max_age_is_checked() -> None:
    assert _cluster().cluster.command_max_age_s == 5.0
    with pytest.raises(configfile.ConfigError) as err:
        _cluster(command_max_age_s=0)
    assert "cluster.command_max_age_s" in str(err.value)
