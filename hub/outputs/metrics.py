"""Prometheus view of the outputs, read from :meth:`Outputs.status` at scrape time.

A collector instead of counters updated on the hot path: the workers keep plain integers
(and a bucket array for the delivery latency), and a scrape turns them into families labelled
``output`` (name) and ``type``.
"""

from __future__ import annotations

import threading
from bisect import bisect_left
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

# Seconds from emit to delivery: a healthy output takes milliseconds; a retrying one up to
# retry_max_s and more.
DELIVERY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                    10.0, 30.0, 60.0, 300.0)

GAUGES = {
    "connected": "1 when the output's last attempt reached its server.",
    "queue_depth": "Events waiting (memory queue plus spill file).",
    "spill_depth": "Events waiting in the spill file.",
}
COUNTERS = {
    "sent": "Events delivered (acknowledged by the server).",
    "failed": "Events refused for good (e.g. dead-lettered by Elasticsearch).",
    "dropped": "Events dropped by the overflow policy or at shutdown.",
    "retries": "Failed send attempts that were retried.",
    "spilled": "Events written to the spill file.",
}


class LatencyHistogram:
    """Bucket counts, kept by one output's worker (a batch at a time), read by scrapes."""

    def __init__(self, buckets: tuple[float, ...] = DELIVERY_BUCKETS) -> None:
        self.bounds = buckets
        self._counts = [0] * (len(buckets) + 1)  # the last: above every bound (+Inf only)
        self._sum = 0.0
        self._lock = threading.Lock()

    def observe_since(self, started: list[float], now: float) -> None:
        """One observation per event that came at ``started[i]`` (monotonic)."""
        bounds, counts = self.bounds, self._counts
        with self._lock:
            for t in started:
                took = now - t
                counts[bisect_left(bounds, took)] += 1
                self._sum += took

    def snapshot(self) -> tuple[list[tuple[str, float]], float]:
        """(cumulative buckets as Prometheus wants them, with "+Inf"; sum of seconds)."""
        with self._lock:
            counts, total = list(self._counts), self._sum
        out, running = [], 0
        for bound, n in zip((*map(str, self.bounds), "+Inf"), counts, strict=True):
            running += n
            out.append((bound, float(running)))
        return out, total


class OutputsCollector:
    def __init__(self, status: Callable[[], list[dict[str, Any]]],
                 latencies: Callable[[], list[tuple[str, str, Any]]] = list) -> None:
        self._status = status
        self._latencies = latencies

    def describe(self) -> list[Metric]:
        return list(self._families([], []))

    def collect(self) -> Iterator[Metric]:
        return self._families(self._status(), self._latencies())

    def _families(self, rows: list[dict[str, Any]],
                  latencies: list[tuple[str, str, Any]]) -> Iterator[Metric]:
        labels = ["output", "type"]
        for key, doc in GAUGES.items():
            fam = GaugeMetricFamily(f"threatseer_output_{key}", doc, labels=labels)
            for r in rows:
                fam.add_metric([r["name"], r["type"]], float(r[key]))
            yield fam
        for key, doc in COUNTERS.items():
            fam = CounterMetricFamily(f"threatseer_output_{key}", doc, labels=labels)
            for r in rows:
                fam.add_metric([r["name"], r["type"]], float(r[key]))
            yield fam
        hist = HistogramMetricFamily(
            "threatseer_output_delivery_seconds", "Seconds from an event's emit to its "
            "delivery (or refusal for good), per event; events replayed from a spill file "
            "are not observed.", labels=labels)
        for name, kind, (buckets, total) in latencies:
            hist.add_metric([name, kind], buckets, total)
        yield hist
