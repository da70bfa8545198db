"""The ``cluster:`` section of the hub config: where the Kafka cluster is and what it holds.

One hub.yaml serves every role: ``threatseer gateway``, ``threatseer scorer`` and
``threatseer output-worker`` read the sections they need (ingest and transport; actions,
profiles and bundle; outputs and publish) plus this one. ``threatseer hub`` ignores it.
"""

from __future__ import annotations

import re
import socket
from dataclasses import dataclass, field
from typing import Any

ROLES = ("gateway", "scorer", "output-worker")
# Each role's /metrics port by default: distinct, so roles sharing a host and a hub.yaml (and
# the embedded hub's 9108) do not collide.
DEFAULT_METRICS = {"gateway": "127.0.0.1:9109", "scorer": "127.0.0.1:9110",
                   "output-worker": "127.0.0.1:9111"}
COMPRESSIONS = ("none", "lz4", "snappy", "zstd", "gzip")
_TOPIC = re.compile(r"[A-Za-z0-9._-]{1,200}\Z")
_NAME = re.compile(r"[A-Za-z0-9._:-]{1,100}\Z")


@dataclass
class ClusterConfig:
    # Kafka bootstrap servers (librdkafka bootstrap.servers), e.g. "k1:9092,k2:9092"; the
    # cluster roles refuse to start without it.
    bootstrap_servers: str = ""
    # This member's name in status and in the profile replicas (default: the host name).
    name: str = ""
    # Scorers' topic of sensor batches (gateways produce, keyed by sensor id).
    batches_topic: str = "threatseer.batches"
    # Scored events (scorers produce transactionally; output workers read read_committed).
    events_topic: str = "threatseer.events"
    # Each scorer's delivery state per sensor (compacted; written in the scoring transaction).
    state_topic: str = "threatseer.scorer-state"
    # Learned behaviour, a grow-only set per subject (compacted).
    profiles_topic: str = "threatseer.profiles"
    # The active rule bundle (compacted; `threatseer cluster publish-bundle`).
    bundles_topic: str = "threatseer.bundles"
    # Every member's status, refreshed every few seconds (compacted; `threatseer cluster
    # status`).
    status_topic: str = "threatseer.status"
    # Which CURVE key each sensor id belongs to, for every gateway: a log of claims, first
    # claim wins (one partition, kept forever: not compacted, see hub/cluster/bindings.py).
    bindings_topic: str = "threatseer.bindings"
    # Kill commands from the scorers to the sensors (scorers produce in their transactions,
    # keyed by sensor id; every gateway reads it all and forwards to the sensors it holds).
    # Only the scorers' Kafka principal may write to it (ACLs: docs/cluster.md).
    commands_topic: str = "threatseer.commands"
    # A gateway drops a kill command decided longer ago than this (s): a stale kill is
    # dangerous. Needs the members' clocks in step (NTP) to well within it.
    command_max_age_s: float = 5.0
    # How long a gateway's fetch of the commands topic may wait for a command (ms). On Kafka
    # a fetch returns as soon as one arrives, so this only paces idle polling (raise it to
    # poll less); a broker that holds every fetch for the whole wait (tansu) adds up to this
    # to each kill, and a shorter wait costs it more CPU while idle (docs/cluster.md).
    command_fetch_wait_ms: int = 20
    # Partitions of the batches, events and state topics when this cluster creates them
    # (all three must have the same count): the most scorers that can share the work.
    partitions: int = 12
    # Replication factor of the topics this cluster creates (1 only for a one-broker lab).
    replication_factor: int = 3
    # Consumer group of the scorers, and of the output workers.
    scorer_group: str = "threatseer-scorers"
    output_group: str = "threatseer-outputs"
    # Scorers' transactional.id prefix: one id per batches partition (<prefix>-<partition>),
    # so whoever takes a partition over fences its previous owner first.
    transactional_id_prefix: str = "threatseer-scorer"
    # Consumer group session timeout: how long a dead member holds its partitions.
    session_timeout_ms: int = 6000
    # A scorer's cycle waits at most this long for input (ms), then scores and commits what
    # has arrived (at most max_batches_per_txn batches) at once: input never waits for more.
    input_wait_ms: int = 50
    max_batches_per_txn: int = 64
    # A partition's transactions start at least this far apart (ms); what is scored
    # meanwhile goes into the next one. A transaction is ~5 requests whatever it carries:
    # fewer, larger ones cost the brokers and the scorer's Kafka client less per event, for
    # at most this much more latency (0: start one as soon as the previous one committed).
    txn_interval_ms: int = 20
    # Compression of the scored events records (librdkafka compression.type: none, lz4,
    # snappy, zstd, gzip). lz4 stores ~145 B/event instead of ~835; "none" saves the scorer
    # no CPU (its Kafka client then checksums and sends 5.8x the bytes: docs/cluster.md).
    events_compression: str = "lz4"
    # How long a gateway waits for Kafka to confirm a batch before it stops acknowledging
    # (librdkafka message.timeout.ms); the sensor resends meanwhile.
    delivery_timeout_s: float = 30.0
    # ZeroMQ PUB endpoint where an output worker republishes the whole cluster's events
    # for `threatseer tap` (empty: none; each scorer's own tap is publish.endpoint).
    tap_endpoint: str = ""
    # Prometheus /metrics (host:port) of each role on this host, e.g. {scorer: "0.0.0.0:9110"};
    # a role left out listens on its default (gateway 9109, scorer 9110, output-worker 9111,
    # on 127.0.0.1); "" turns it off. The embedded hub's is metrics.listen.
    metrics_listen: dict[str, str] = field(default_factory=dict)
    # Extra librdkafka settings for every client (TLS, SASL, ...). Secret values
    # (sasl.password, ...) are never printed or logged; they may use ${ENV} or be given as
    # <name>_file (e.g. sasl.password_file: /etc/threatseer/kafka.pass).
    kafka: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> None:
        for key in ("batches_topic", "events_topic", "state_topic", "profiles_topic",
                    "bundles_topic", "status_topic", "bindings_topic", "commands_topic"):
            if not _TOPIC.match(getattr(self, key)):
                raise ValueError(f"{key}: must be 1-200 of A-Z a-z 0-9 . _ -")
        if self.name and not _NAME.match(self.name):
            raise ValueError("name: must be 1-100 of A-Z a-z 0-9 . _ : -")
        if not 1 <= self.partitions <= 10_000:
            raise ValueError("partitions: must be 1-10000")
        if not 1 <= self.replication_factor <= 32:
            raise ValueError("replication_factor: must be 1-32")
        if self.session_timeout_ms < 1000:
            raise ValueError("session_timeout_ms: must be at least 1000")
        if self.input_wait_ms < 1:
            raise ValueError("input_wait_ms: must be at least 1")
        if not 0 <= self.txn_interval_ms <= 10_000:
            raise ValueError("txn_interval_ms: must be between 0 and 10000")
        if self.max_batches_per_txn < 1:
            raise ValueError("max_batches_per_txn: must be at least 1")
        if self.events_compression not in COMPRESSIONS:
            raise ValueError(f"events_compression: must be one of {', '.join(COMPRESSIONS)}")
        if not 0.1 <= self.command_max_age_s <= 300:
            raise ValueError("command_max_age_s: must be between 0.1 and 300")
        if not 1 <= self.command_fetch_wait_ms <= 5000:
            raise ValueError("command_fetch_wait_ms: must be between 1 and 5000")
        if self.delivery_timeout_s <= 0:
            raise ValueError("delivery_timeout_s: must be positive")
        if self.tap_endpoint and "://" not in self.tap_endpoint:
            raise ValueError("tap_endpoint: must be a ZeroMQ endpoint like tcp://0.0.0.0:5557")
        for role, listen in self.metrics_listen.items():
            if role not in ROLES:
                raise ValueError(f"metrics_listen: {role!r} is not a role ({', '.join(ROLES)})")
            host, sep, port = str(listen).rpartition(":")
            if listen and (not isinstance(listen, str) or not sep or not port.isdigit()
                           or not 0 < int(port) < 65536):
                raise ValueError(f"metrics_listen.{role}: must be host:port or empty")
        for key in self.kafka:
            if not isinstance(key, str) or not re.fullmatch(r"[a-z0-9._]{1,100}", key):
                raise ValueError(f"kafka: {key!r} is not a librdkafka setting name")

    def metrics_for(self, role: str) -> str:
        """Where ``role`` serves /metrics ("" = nowhere)."""
        return self.metrics_listen.get(role, DEFAULT_METRICS[role])

    def member(self) -> str:
        return self.name or socket.gethostname()

    def client(self, **extra: Any) -> dict[str, Any]:
        """librdkafka settings: bootstrap servers, the ``kafka`` extras, then ``extra``."""
        return {"bootstrap.servers": self.bootstrap_servers, **self.kafka, **extra}

