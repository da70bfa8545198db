"""The hub's configuration: every key, its default, and what it is for.

``threatseer hub -c hub.yaml`` reads a YAML file of these keys (loaded with
:func:`threatseer.common.configfile.load`, so a bad key is reported as ``file:line: key: why``
and the CLI exits 2). Anything left out keeps the default below.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from threatseer.common import wire
from threatseer.hub.cluster.config import ClusterConfig
from threatseer.hub.console.config import ConsoleConfig
from threatseer.hub.outputs import OutputConfig, check_unique_names


@dataclass
class IngestConfig:
    # ZeroMQ ROUTER endpoint the sensors send their batches to (acks go back on it).
    endpoint: str = "tcp://127.0.0.1:5555"
    # Batches larger than this (header + body bytes) are refused as "oversized" and counted.
    max_message_bytes: int = wire.MAX_BODY_BYTES
    # Receive high-water mark (messages per connected sensor, kept by ZeroMQ). When the hub
    # falls behind, a flooding sensor fills its own pipe and is blocked at its end while the
    # others keep their fair share (ZeroMQ reads connected peers round-robin).
    rcv_hwm: int = 200
    # Batches taken off the socket per pipeline cycle; they are then scored round-robin per
    # sensor, so one sensor's burst never delays another's batch by more than one cycle.
    max_batches_per_cycle: int = 64
    # Minimum seconds between two log lines about the same sensor and bad-input reason.
    log_interval_s: float = 10.0
    # SQLite synchronous mode of the delivery ledger (<state_dir>/ledger.db): normal survives
    # a hub crash (kill -9); full also a power cut, at one fsync per pipeline cycle.
    ledger_synchronous: str = "normal"
    # Days the ledger keeps its record of each scored batch (the per-sensor state is kept).
    ledger_keep_days: float = 2.0

    def validate(self) -> None:
        if "://" not in self.endpoint:
            raise ValueError("endpoint: must be a ZeroMQ endpoint like tcp://0.0.0.0:5555")
        if self.max_message_bytes < 1024:
            raise ValueError("max_message_bytes: must be at least 1024")
        if self.rcv_hwm < 1:
            raise ValueError("rcv_hwm: must be at least 1")
        if self.max_batches_per_cycle < 1:
            raise ValueError("max_batches_per_cycle: must be at least 1")
        if self.ledger_synchronous not in ("normal", "full"):
            raise ValueError("ledger_synchronous: must be normal or full")


@dataclass
class PublishConfig:
    # ZeroMQ PUB endpoint for `threatseer tap` and other subscribers; empty disables it.
    endpoint: str = "tcp://127.0.0.1:5556"
    # Send high-water mark (messages per subscriber); a slow subscriber loses the excess
    # rather than slowing the hub.
    snd_hwm: int = 100_000
    # Seconds the hub waits after start before scoring, so subscribers that were connected
    # before a restart are back (ZeroMQ reconnects every 100 ms) and miss nothing that the
    # sensors resend (sensors keep it meanwhile).
    start_grace_s: float = 1.0

    def validate(self) -> None:
        if self.endpoint and "://" not in self.endpoint:
            raise ValueError("endpoint: must be a ZeroMQ endpoint like tcp://127.0.0.1:5556")


@dataclass
class ActionConfig:
    # Events whose risk score is below this are tossed (dropped, only counted).
    toss_below: int = 0
    # Events at or above this become alerts ("event.kind": "alert"); the rest are logged.
    alert_at: int = 50

    def validate(self) -> None:
        if self.alert_at < self.toss_below:
            raise ValueError("alert_at: must not be below toss_below")


@dataclass
class ProfileConfig:
    # Learned behaviour profiles; off means the profile engine neither learns nor scores.
    enabled: bool = True
    # SQLite file; empty means <state_dir>/profiles.db.
    db: str = ""
    # A subject learns for at least this long after it is first seen ...
    learn_seconds: float = 3600.0
    # ... and until it has been seen in at least this many events.
    learn_min_events: int = 100
    # Score added when a learned subject does something outside its profile.
    abnormal_score: int = 20
    # Score added (a negative number lowers the risk) when it stays inside its profile.
    normal_score: int = -5
    # Seconds between batched writes of new behaviour to SQLite.
    flush_interval_s: float = 1.0

    def validate(self) -> None:
        if self.learn_seconds < 0:
            raise ValueError("learn_seconds: must not be negative")
        if self.learn_min_events < 0:
            raise ValueError("learn_min_events: must not be negative")
        if self.flush_interval_s <= 0:
            raise ValueError("flush_interval_s: must be positive")


@dataclass
class MetricsConfig:
    # host:port of the Prometheus /metrics endpoint; empty disables it.
    listen: str = "127.0.0.1:9108"

    def validate(self) -> None:
        if self.listen:
            host, sep, port = self.listen.rpartition(":")
            if not sep or not port.isdigit() or not 0 <= int(port) < 65536:
                raise ValueError("listen: must be host:port, e.g. 127.0.0.1:9108")


@dataclass
class AdminConfig:
    # ZeroMQ endpoint of the bundle admin server (publish/list/rollback); empty disables it.
    endpoint: str = ""
    # Public keys (base64) of admins allowed to talk to the admin server.
    admin_keys: list[str] = field(default_factory=list)
    # Public keys (base64) whose bundle signatures the hub accepts.
    trusted_signing_keys: list[str] = field(default_factory=list)


@dataclass
class HubConfig:
    ingest: IngestConfig = field(default_factory=IngestConfig)
    publish: PublishConfig = field(default_factory=PublishConfig)
    actions: ActionConfig = field(default_factory=ActionConfig)
    profiles: ProfileConfig = field(default_factory=ProfileConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    admin: AdminConfig = field(default_factory=AdminConfig)
    # The web console served by the hub (docs/operations.md, "Console"); off by default.
    console: ConsoleConfig = field(default_factory=ConsoleConfig)
    # Rule bundle (directory or archive) installed and activated at every start; leave it
    # empty to start on the bundle last published through the admin endpoint.
    bundle: str = ""
    # Local rules layer (directory or archive, `layer: local` in its manifest) stacked on
    # `bundle` at every start (empty: none). Only with `bundle`: without it the stack last
    # published through the admin endpoint runs.
    local_bundle: str = ""
    # Where the hub keeps state: installed bundles, profiles, status file.
    state_dir: str = "/var/lib/threatseer/hub"
    # Transport (docs/transport.md). CURVE is required unless plaintext is true: the hub's
    # secret key file (`threatseer keys gen --type curve`; sensors and subscribers need its
    # public half) ...
    curve_secret_key_file: str = ""
    # ... the sensors' public keys allowed to send: a file (or a directory of files) of Z85
    # keys, one a line ("KEY  # name"); re-read when it changes, no restart ...
    curve_allow_list: str = ""
    # ... and the subscribers' (tap, other SUB clients) public keys, same format; empty: no
    # subscriber may read the PUB stream.
    curve_subscriber_allow_list: str = ""
    # Accept sensors and subscribers unencrypted and unauthenticated (a warning is logged at
    # start). For a lab or a hub on the sensors' host only.
    plaintext: bool = False
    # Where scored events go besides the PUB socket (default: nowhere else).
    outputs: list[OutputConfig] = field(default_factory=list)
    # The hub as a cluster on Kafka (gateway, scorer, output-worker; docs/cluster.md).
    # `threatseer hub` ignores it.
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    # debug, info, warning, error.
    log_level: str = "info"

    def validate(self) -> None:
        if self.log_level not in ("debug", "info", "warning", "error"):
            raise ValueError("log_level: must be debug, info, warning or error")
        if not self.state_dir:
            raise ValueError("state_dir: must not be empty")
        if self.local_bundle and not self.bundle:
            raise ValueError("local_bundle: needs bundle (the base it stacks on)")
        check_unique_names(self.outputs)

    def profile_db(self) -> str:
        return self.profiles.db or os.path.join(self.state_dir, "profiles.db")
