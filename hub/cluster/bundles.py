"""Bundles for a cluster: announced once on a compacted topic, verified and activated by every
scorer.

``threatseer cluster publish-bundle ARCHIVE`` produces the signed archive under the key
``active``; each scorer reads the topic from its start (so a scorer started later gets the
current bundle too), and installs each archive through its own :class:`BundleStore`: the
signature is checked against ``admin.trusted_signing_keys``, the bundle compiled and its tests
run before it is activated. A bad or tampered archive changes nothing (counted, logged, shown
in status). Without trusted keys a scorer refuses every announced bundle: whoever can write
to the topic must not be able to change the rules.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable
from typing import Any

from confluent_kafka import KafkaError, TopicPartition

from threatseer.hub.cluster.config import ClusterConfig
from threatseer.hub.cluster.kafka import ClusterError, consumer, producer, take

log = logging.getLogger("threatseer.hub.cluster.bundles")
KEY = b"active"
MAX_BUNDLE_BYTES = 8 * 1024 * 1024


def publish_bundle(cfg: ClusterConfig, data: bytes, timeout: float = 30.0) -> None:
    """Announce ``data`` (a bundle archive) to every scorer; raises ClusterError on failure."""
    if len(data) > MAX_BUNDLE_BYTES:
        raise ClusterError(f"bundle archive of {len(data)} bytes > {MAX_BUNDLE_BYTES}")
    p = producer(cfg, **{"acks": "all", "enable.idempotence": True,
                         "message.max.bytes": MAX_BUNDLE_BYTES + 65536})
    result: list[KafkaError | None] = []
    p.produce(cfg.bundles_topic, key=KEY, value=data,
              on_delivery=lambda err, _m: result.append(err))
    p.flush(timeout)
    if not result:
        raise ClusterError(f"no delivery report from Kafka within {timeout:.0f} s")
    if result[0] is not None:
        raise ClusterError(f"bundle not stored: {result[0].str()}")


class BundleFeed:
    """Reads the bundles topic and activates each good bundle through ``on_activate``."""

    def __init__(self, cfg: ClusterConfig, store: Any,
                 on_activate: Callable[[Any], None]) -> None:
        self.cfg, self.store, self.on_activate = cfg, store, on_activate
        self.activated = self.refused = 0
        self.last_error = ""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bundle-feed", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)

    def _run(self) -> None:
        c = consumer(self.cfg, **{"group.id": "threatseer-bundles-" + uuid.uuid4().hex,
                                  "enable.auto.commit": False,
                                  "fetch.message.max.bytes": MAX_BUNDLE_BYTES + 65536})
        try:
            c.assign([TopicPartition(self.cfg.bundles_topic, 0, 0)])
            while not self._stop.is_set():
                for m in take(c, 10, 0.2):
                    if not m.error() and m.key() == KEY:
                        self.handle(m.value() or b"", f"offset {m.offset()}")
        except Exception:
            log.exception("bundle feed failed")
        finally:
            c.close()

    def handle(self, data: bytes, where: str) -> None:
        from threatseer.hub.rules.store import StoreError

        if self.store is None or not self.store.trusted:
            self._refuse(where, "admin.trusted_signing_keys is empty: announced bundles are "
                                "refused (only signed bundles may change a cluster's rules)")
            return
        if len(data) > MAX_BUNDLE_BYTES:
            self._refuse(where, f"archive of {len(data)} bytes")
            return
        try:
            bundle = self.store.publish(data)
        except (StoreError, OSError) as exc:
            self._refuse(where, str(exc).splitlines()[0])
            return
        self.activated += 1
        self.on_activate(bundle)
        log.info("bundle %s %s activated from %s", bundle.manifest.name,
                 bundle.manifest.version, self.cfg.bundles_topic)

    def _refuse(self, where: str, why: str) -> None:
        self.refused += 1
        self.last_error = f"{where}: {why}"
        log.error("announced bundle refused (%s): %s", where, why)

    def status(self) -> dict[str, Any]:
        return {"activated": self.activated, "refused": self.refused,
                "last_error": self.last_error}
