"""Prometheus metrics of the hub (prometheus-client, on its own registry).

Counters are updated once per batch (never per event) to keep them off the hot path. One
metric per quantity: the outputs' own (queue depth, sent, latency, ...) are
``threatseer_output_*`` (hub/outputs/metrics.py), not repeated here.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

# Seconds from a batch taken off the ingest socket to its events published and queued for
# the outputs: scoring takes ~10 us an event, a batch of 512 a few ms.
PUBLISH_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                   5.0, 10.0)


class HubMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.events_in = Counter("threatseer_hub_events_in", "Events received (decoded, before "
                                 "the schema check), per sensor.", ["sensor"], registry=r)
        self.events_out = Counter("threatseer_hub_events_out", "Events emitted (logged or "
                                  "alerted), per sensor.", ["sensor"], registry=r)
        self.batches = Counter("threatseer_hub_batches", "Batches received, per sensor.",
                               ["sensor"], registry=r)
        self.bad_input = Counter("threatseer_hub_bad_input", "Refused input per sensor and reason "
                                 "(frames, header, version, oversized, body, schema).",
                                 ["sensor", "reason"], registry=r)
        self.actions = Counter("threatseer_hub_actions", "Scored events by action (toss, log, "
                               "alert).", ["action"], registry=r)
        self.engine_seconds = Counter("threatseer_hub_engine_seconds", "Time spent in each "
                                      "engine.", ["engine"], registry=r)
        self.pending = Gauge("threatseer_hub_pending_batches", "Batches taken off the socket and "
                             "waiting to be scored, per sensor.", ["sensor"], registry=r)
        self.publish_latency = Histogram(
            "threatseer_hub_ingest_to_publish_seconds", "Seconds from a batch taken off the "
            "ingest socket to its events published (PUB) and queued for the outputs, per "
            "batch.", buckets=PUBLISH_BUCKETS, registry=r)
        self.profiles = Gauge("threatseer_hub_profiles", "Profiles in memory.", registry=r)
        self.bundle = Gauge("threatseer_hub_bundle_info", "Active rule bundle: the base and, "
                            "when one is stacked on it, the local layer (1 each).",
                            ["layer", "name", "version", "digest"], registry=r)
        self.rules = Gauge("threatseer_hub_rules", "Rules in the active bundle (0: events get "
                           "only the default action).", registry=r)
        self.bundle_problems = Gauge("threatseer_hub_bundle_problems", "Bundle load failures "
                                     "behind the running bundle (0: it is the configured one; "
                                     "the reasons are in status.json).", registry=r)
        self.duplicates = Counter("threatseer_hub_duplicate_batches", "Batches received again "
                                  "after they were scored (resends after a hub restart), not "
                                  "scored again, per sensor.", ["sensor"], registry=r)
        self.lost_batches = Counter("threatseer_hub_lost_batches", "Batches a sensor could no "
                                    "longer resend (final sequence gaps), per sensor.",
                                    ["sensor"], registry=r)
        self.auth = Counter("threatseer_hub_auth", "CURVE handshakes accepted/refused and "
                            "messages of revoked keys dropped, per ZAP domain (ingest, publish).",
                            ["domain", "result"], registry=r)
        self._children: dict[tuple[str, str], Any] = {}
        self._engine_seen: dict[str, float] = {}

    def child(self, metric: Counter | Gauge, *labels: str) -> Any:
        key = (metric._name, *labels)  # type: ignore[attr-defined]
        c = self._children.get(key)
        if c is None:
            c = self._children[key] = metric.labels(*labels)
        return c

    def sync_engine_seconds(self, totals: dict[str, float]) -> None:
        for name, total in totals.items():
            delta = total - self._engine_seen.get(name, 0.0)
            if delta > 0:
                self.child(self.engine_seconds, name).inc(delta)
                self._engine_seen[name] = total

    def set_bundle(self, name: str, version: str, digest: str,
                   local: tuple[str, str, str] | None = None) -> None:
        self.bundle.clear()
        self.bundle.labels("base", name, version, digest[:16]).set(1)
        if local is not None:
            self.bundle.labels("local", local[0], local[1], local[2][:16]).set(1)

    def serve(self, listen: str) -> Any:
        host, _, port = listen.rpartition(":")
        server, _thread = start_http_server(int(port), addr=host or "0.0.0.0",
                                            registry=self.registry)
        return server
