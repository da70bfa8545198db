"""What every cluster role needs from Kafka: its topics, clients, and a wait for a partition's
end that does not trust the broker's offsets.

Why a barrier instead of the high watermark: a reader that must have read a partition to its
end (a scorer loading its delivery state) asks "where is the end?" of ListOffsets, and some
Kafka-protocol brokers answer that one batch short (tansu). Writing a record and reading until
it comes back is correct on every broker: everything before it is then read.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from threatseer.hub.cluster.config import ClusterConfig

log = logging.getLogger("threatseer.hub.cluster")
COMPACT = {"cleanup.policy": "compact"}
FOREVER = {"cleanup.policy": "delete", "retention.ms": "-1", "retention.bytes": "-1"}


class ClusterError(RuntimeError):
    """The Kafka cluster cannot be used as configured (one line for the user)."""


def require(cfg: ClusterConfig) -> None:
    if not cfg.bootstrap_servers:
        raise ClusterError("cluster.bootstrap_servers: required for the cluster roles "
                           "(docs/cluster.md)")


def topic_specs(cfg: ClusterConfig) -> dict[str, tuple[int, dict[str, str]]]:
    """Every topic of the cluster: name -> (partitions, config)."""
    n = cfg.partitions
    return {
        cfg.batches_topic: (n, {}),
        cfg.events_topic: (n, {}),
        cfg.state_topic: (n, COMPACT),
        cfg.profiles_topic: (3, COMPACT),
        cfg.bundles_topic: (1, COMPACT),
        cfg.status_topic: (1, COMPACT),
        cfg.bindings_topic: (1, FOREVER),
        # kill commands: few (rate-limited per sensor), worthless after seconds
        # (cluster.command_max_age_s); one partition is the cheapest for every gateway to read
        cfg.commands_topic: (1, {"cleanup.policy": "delete", "retention.ms": "3600000"}),
    }


def ensure_topics(cfg: ClusterConfig, timeout: float = 20.0) -> dict[str, int]:
    """Create the cluster's topics that are missing; return each topic's partition count.

    The batches, events and state topics must have the same number of partitions: a scorer
    writes the events and the state of batches partition p to partition p of the others.
    """
    require(cfg)
    admin = AdminClient(cfg.client())
    specs = topic_specs(cfg)
    try:
        existing = admin.list_topics(timeout=timeout).topics
    except KafkaException as exc:
        raise ClusterError(f"cannot reach Kafka at {cfg.bootstrap_servers}: {exc}") from None
    missing = [NewTopic(t, n, cfg.replication_factor, config=conf)
               for t, (n, conf) in specs.items() if t not in existing]
    if missing:
        for topic, fut in admin.create_topics(missing, request_timeout=timeout).items():
            try:
                fut.result(timeout)
                log.info("created topic %s", topic)
            except KafkaException as exc:
                if "already exists" not in str(exc).lower():
                    raise ClusterError(f"cannot create topic {topic}: {exc}") from None
    counts = partition_counts(cfg, admin, timeout)
    trio = {counts.get(t) for t in (cfg.batches_topic, cfg.events_topic, cfg.state_topic)}
    if len(trio) != 1:
        raise ClusterError(f"topics {cfg.batches_topic}, {cfg.events_topic} and "
                           f"{cfg.state_topic} must have the same partition count, have "
                           f"{[counts.get(t) for t in (cfg.batches_topic, cfg.events_topic, cfg.state_topic)]}")
    return counts


def partition_counts(cfg: ClusterConfig, admin: AdminClient | None = None,
                     timeout: float = 20.0) -> dict[str, int]:
    admin = admin or AdminClient(cfg.client())
    deadline = time.monotonic() + timeout
    while True:
        topics = admin.list_topics(timeout=timeout).topics
        counts = {t: len(topics[t].partitions) for t in topic_specs(cfg) if t in topics}
        if len(counts) == len(topic_specs(cfg)) or time.monotonic() > deadline:
            return counts
        time.sleep(0.1)


def producer(cfg: ClusterConfig, **extra: Any) -> Producer:
    return Producer(cfg.client(**{"logger": log, **extra}))


def consumer(cfg: ClusterConfig, **extra: Any) -> Consumer:
    return Consumer(cfg.client(**{"logger": log, **extra}))


def take(c: Consumer, most: int, timeout: float) -> list[Any]:
    """Up to ``most`` messages: waits at most ``timeout`` s for the first, then takes only what
    is already there. (``Consumer.consume(most, timeout)`` waits the whole timeout unless
    ``most`` messages come: every record would be held back up to ``timeout``.)"""
    msgs = c.consume(1, timeout)
    if msgs and most > 1:
        msgs += c.consume(most - 1, 0)
    return msgs


def read_to_barrier(cfg: ClusterConfig, write: Callable[[bytes], None], topic: str,
                    partition: int, on_record: Callable[[Any], None],
                    timeout: float = 30.0) -> int:
    """Read ``topic``/``partition`` from its start until the barrier that ``write(nonce)``
    puts there (a record whose key is ``b"\\0barrier"`` and whose value is ``nonce``);
    call ``on_record`` for every other record. Returns the number of records read."""
    nonce = uuid.uuid4().bytes
    write(nonce)
    c = consumer(cfg, **{"group.id": "threatseer-barrier-" + uuid.uuid4().hex,
                         "enable.auto.commit": False, "isolation.level": "read_committed",
                         "enable.partition.eof": False})
    n = 0
    try:
        c.assign([TopicPartition(topic, partition, 0)])  # 0: from the oldest kept record
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for msg in take(c, 500, 0.2):
                if msg.error():
                    continue
                if msg.key() == BARRIER:
                    if msg.value() == nonce:
                        return n
                    continue
                n += 1
                on_record(msg)
        raise ClusterError(f"{topic}[{partition}]: the barrier did not come back within "
                           f"{timeout:.0f} s")
    finally:
        c.close()


BARRIER = b"\0barrier"
