"""The hub's configuration: every key, its default, and what it is for.

``threatseer hub -c hub.yaml`` reads a YAML file of these keys (loaded with
:func:`threatseer.common.configfile.load`, so a bad key is reported as ``file:line: key: why``
and the CLI exits 2). Anything left out keeps the default below.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from threatseer.common import configfile, wire
from threatseer.common.protect import DEFAULT_PROTECTED_PROCESSES, check_protected_list
from threatseer.hub.cluster.config import ClusterConfig
from threatseer.hub.console.config import ConsoleConfig
from threatseer.hub.outputs import OutputConfig, check_unique_names
from threatseer.hub.outputs.config import OPTIONS


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
    # Batches the hub holds taken off the socket (in one queue per sensor); they are scored
    # in rounds of one batch per sensor, so one sensor's burst never queues ahead of another.
    max_batches_per_cycle: int = 64
    # A pipeline cycle scores rounds for at most this long, then commits and acknowledges
    # them; from a quarter of this on it ends as soon as a sensor of the cycle has nothing
    # more queued, so another sensor's flood delays a quiet sensor's ack by about a quarter
    # of this plus one of its batches.
    max_cycle_ms: float = 20.0
    # Minimum seconds between two log lines about the same sensor and bad-input reason.
    log_interval_s: float = 10.0
    # SQLite synchronous mode of the delivery ledger (<state_dir>/ledger.db): normal survives
    # a hub crash (kill -9); full also a power cut, at one fsync per pipeline cycle.
    ledger_synchronous: str = "normal"
    # Days the ledger keeps its record of each scored batch (the per-sensor state is kept).
    ledger_keep_days: float = 2.0
    # ... and at most this many of the latest records per sensor (deduplication needs only
    # the per-sensor state: the records bound the ledger's size, not its correctness).
    ledger_keep_batches: int = 1000
    # Strings longer than this (characters) are cut at ingest and the field is named in
    # threatseer.truncated_fields: what the rules, the outputs and the memory see is bounded.
    max_field_chars: int = 8192
    # Lists longer than this are cut the same way.
    max_list_items: int = 1024
    # Batches whose scoring failed are appended (header, body, error) to
    # <state_dir>/failed-batches.msgpack, rotated at this size (one older file is kept).
    failed_batches_max_mib: int = 64
    # At most one acknowledgement per sensor connection per this many ms: the first after a
    # quiet spell goes at once, later ones cover every batch scored meanwhile (each ack
    # wakes the sensor, ~0.3 ms of its CPU; acks are cumulative; a sensor with 16 batches
    # outstanding is answered at once). 0: one per pipeline cycle.
    ack_delay_ms: int = 500
    # A sensor key (in plaintext mode, a connection) that sends this many malformed batches
    # (refused whole, or with no event the schema accepts) within penalty_window_s has its
    # messages refused unread for penalty_box_s: counted per sensor as "penalty-box", never
    # acknowledged (a sensor that is merely broken sends them again later). One hostile key
    # then costs the hub a dictionary lookup per message instead of a decode, so the other
    # sensors' acks keep their latency (docs/security.md, "The penalty box"). 0: never box.
    penalty_strikes: int = 20
    # The window (seconds) in which penalty_strikes malformed batches box a sender.
    penalty_window_s: float = 10.0
    # Seconds a boxed sender's messages are refused unread (then it starts with no strikes).
    penalty_box_s: float = 60.0

    def validate(self) -> None:
        if "://" not in self.endpoint:
            raise ValueError("endpoint: must be a ZeroMQ endpoint like tcp://0.0.0.0:5555")
        if self.max_message_bytes < 1024:
            raise ValueError("max_message_bytes: must be at least 1024")
        if self.rcv_hwm < 1:
            raise ValueError("rcv_hwm: must be at least 1")
        if self.max_batches_per_cycle < 1:
            raise ValueError("max_batches_per_cycle: must be at least 1")
        if not 0 <= self.ack_delay_ms <= 5000:
            raise ValueError("ack_delay_ms: must be between 0 and 5000")
        if self.max_cycle_ms <= 0:
            raise ValueError("max_cycle_ms: must be positive")
        if self.ledger_synchronous not in ("normal", "full"):
            raise ValueError("ledger_synchronous: must be normal or full")
        if self.ledger_keep_batches < 1:
            raise ValueError("ledger_keep_batches: must be at least 1")
        if self.max_field_chars < 256:
            raise ValueError("max_field_chars: must be at least 256")
        if self.max_list_items < 16:
            raise ValueError("max_list_items: must be at least 16")
        if self.penalty_strikes < 0:
            raise ValueError("penalty_strikes: must be 0 (off) or more")
        if self.penalty_window_s <= 0:
            raise ValueError("penalty_window_s: must be positive")
        if self.penalty_box_s <= 0:
            raise ValueError("penalty_box_s: must be positive")
        if self.failed_batches_max_mib < 1:
            raise ValueError("failed_batches_max_mib: must be at least 1")


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
class ResponseConfig:
    # Rules whose `action: kill` is carried out, by the name their indicator carries (a
    # query rule's name, a Sigma rule's title, risky_process:NAME, a sensitive-file glob,
    # sha256:HASH, an enforce.yaml exec rule's name), each "kill" or "dry-run" (the sensor
    # checks everything and reports what it would have killed). A rule with action kill
    # that is not here only alerts; the decision is logged. Empty: nothing is ever killed.
    kill_rules: dict[str, str] = field(default_factory=dict)
    # Every kill a dry run, whatever kill_rules says.
    dry_run: bool = False
    # Kills asked of one sensor (host) per minute at most; past it alerts say "refused: rate
    # limit". The kernel's exec enforcement on each sensor has the same limit.
    max_kills_per_minute: int = 10
    # Process names or executable paths never killed (sent to the sensors too, which add
    # their own protected_processes). pid 1, kernel threads, the sensor and the hub are never
    # killed in any case.
    protected_processes: list[str] = field(
        default_factory=lambda: list(DEFAULT_PROTECTED_PROCESSES))
    # Each sensor connection is sent the exec policy again after this many seconds (on its
    # next batch), even unchanged: a policy frame lost on the way (a connection's full
    # queue, a cluster command older than command_max_age_s when a gateway relays it) would
    # otherwise leave that sensor's kernel without it until the policy changes. A sensor
    # that already has the version only compares it.
    policy_resend_s: float = 60.0

    def validate(self) -> None:
        if not 1.0 <= self.policy_resend_s <= 86_400.0:
            raise ValueError("policy_resend_s: must be between 1 and 86400 seconds")
        for rule, mode in self.kill_rules.items():
            if mode not in ("kill", "dry-run"):
                raise ValueError(f"kill_rules: {rule!r}: must be kill or dry-run, not {mode!r}")
        if not 0 <= self.max_kills_per_minute <= 100_000:
            raise ValueError("max_kills_per_minute: must be between 0 and 100000")
        check_protected_list(self.protected_processes, "protected_processes")


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
    # Accept rule bundles without a signature by a trusted key (from `bundle:` and the admin
    # endpoint). Off: an unsigned bundle is refused, also when no trusted key is set. The
    # hub logs a warning at start when it is on.
    allow_unsigned: bool = False


@dataclass
class HubConfig:
    ingest: IngestConfig = field(default_factory=IngestConfig)
    publish: PublishConfig = field(default_factory=PublishConfig)
    actions: ActionConfig = field(default_factory=ActionConfig)
    profiles: ProfileConfig = field(default_factory=ProfileConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    admin: AdminConfig = field(default_factory=AdminConfig)
    response: ResponseConfig = field(default_factory=ResponseConfig)
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


def printable(cfg: HubConfig) -> dict:
    """``cfg`` as ``--print-config`` shows it (Salt's check_cmd: its output lands in job
    returns): secrets, passwords in URLs, and each output's ``SECRET_FIELDS`` (a webhook's url
    and headers) redacted."""
    doc = configfile.redacted(configfile.to_dict(cfg))
    for out, shown in zip(cfg.outputs, doc["outputs"], strict=True):
        options = shown.get("options") or {}
        for name in getattr(OPTIONS.get(out.type), "SECRET_FIELDS", ()):
            if name in options:
                options[name] = configfile.redacted_field(out.options[name])
    return doc
