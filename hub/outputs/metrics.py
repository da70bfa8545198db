"""Prometheus view of the outputs, read from :meth:`Outputs.status` at scrape time.

A collector instead of counters updated on the hot path: the workers keep plain integers,
and a scrape turns them into families labelled ``output`` (name) and ``type``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

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


class OutputsCollector:
    def __init__(self, status: Callable[[], list[dict[str, Any]]]) -> None:
        self._status = status

    def describe(self) -> list[Metric]:
        return list(self._families([]))

    def collect(self) -> Iterator[Metric]:
        return self._families(self._status())

    def _families(self, rows: list[dict[str, Any]]) -> Iterator[Metric]:
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
