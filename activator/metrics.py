"""The activator's Prometheus metrics: plain dicts on the data path, text from prometheus-client.

Updating a metric on the data path is one dict lookup and a few list increments; nothing of the library
runs then. ``ActivatorMetrics`` is a prometheus-client collector registered nowhere (never in the
global registry: ``kpa up`` embeds the activator and tests run several): when scraped it turns the
counters into metric families, from a snapshot off the event loop (``autoscaler.exposition``). The
gauges (held requests, concurrency, capacity, healthy pods) are not stored at all: they are read from
the live throttlers when scraped, so they can never drift from the truth.

Names and labels are Knative's activator ones where Knative has the metric (``activator_request_count``,
``activator_request_latencies`` in ms, ``activator_request_concurrency``); ours start with ``kpa_``
(docs/metrics.md).
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from itertools import accumulate

from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from autoscaler.stat import LATENCY_BUCKETS_MS, REVISION_LABELS, revision_labels

# Seconds waited for capacity: from "a pod was free" (sub-millisecond) to a cold start of minutes.
WAIT_BUCKETS = (
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
)  # fmt: skip
CONTAINER_NAME = "activator"
LABELS = (*REVISION_LABELS, "pod_name", "container_name")
_BY_CODE = (*LABELS, "response_code", "response_code_class")

Labels = tuple[str, str]  # (namespace, revision)


class _Histogram:
    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.total += value

    def copy(self) -> _Histogram:
        copied = _Histogram(self.bounds)
        copied.counts = self.counts.copy()
        copied.total = self.total
        return copied

    def buckets(self) -> list[tuple[str, float]]:
        les = (*(repr(float(bound)) for bound in self.bounds), "+Inf")
        return list(zip(les, accumulate(self.counts), strict=True))


_NO_WAITS = _Histogram(WAIT_BUCKETS)  # never observed: the series of a revision without waits yet


@dataclass(frozen=True, slots=True)
class RevisionGauges:
    namespace: str
    revision: str
    held: int
    in_flight: int
    capacity: int
    healthy_pods: int


# (name, help, value of a RevisionGauges row): the gauges, one family each.
_GAUGES: tuple[tuple[str, str, Callable[[RevisionGauges], int]], ...] = (
    ("activator_request_concurrency", "Requests in the activator for the revision now: held + in flight.",
     lambda g: g.held + g.in_flight),
    ("kpa_activator_held_requests", "Requests waiting for capacity now.", lambda g: g.held),
    ("kpa_activator_in_flight_requests", "Requests being proxied to a pod now.", lambda g: g.in_flight),
    ("kpa_activator_revision_capacity", "Requests it may send at once (cc x pods).", lambda g: g.capacity),
    ("kpa_activator_healthy_pods", "Pods that passed a probe.", lambda g: g.healthy_pods),
)  # fmt: skip


class ActivatorMetrics(Collector):
    """Requests by revision and code with their latency, waits for capacity and for a cold start; the
    gauges and push failures read when scraped.

    ``gauges`` yields one row per revision and ``stat_push_failures`` the stat batches the
    autoscaler did not accept, both called on each scrape.
    """

    def __init__(
        self,
        gauges: Callable[[], Iterable[RevisionGauges]] = tuple,
        stat_push_failures: Callable[[], int] = lambda: 0,
        pod_name: str = "activator",
    ) -> None:
        self.gauges = gauges
        self.stat_push_failures = stat_push_failures
        self.pod_name = pod_name
        self.requests: dict[tuple[str, str, int], _Histogram] = {}  # (ns, rev, code) -> latencies (ms)
        self.waits: dict[Labels, _Histogram] = {}
        self.cold_waits: dict[Labels, _Histogram] = {}

    def observe_request(self, namespace: str, revision: str, code: int, latency_ms: float) -> None:
        """A request answered ``code`` after ``latency_ms`` from its arrival (404s: revision "")."""
        key = (namespace, revision, code)
        histogram = self.requests.get(key)
        if histogram is None:
            histogram = self.requests[key] = _Histogram(LATENCY_BUCKETS_MS)
        histogram.observe(latency_ms)

    def observe_wait(self, namespace: str, revision: str, seconds: float, cold: bool) -> None:
        """A request waited ``seconds`` for capacity; ``cold``: its revision had no pod to take it (the
        request's ``X-Kpa-Cold-Start: true``), so the wait was (part of) a cold start."""
        key = (namespace, revision)
        histogram = self.waits.get(key)
        if histogram is None:
            histogram = self.waits[key] = _Histogram(WAIT_BUCKETS)
        histogram.observe(seconds)
        if cold:
            histogram = self.cold_waits.get(key)
            if histogram is None:
                histogram = self.cold_waits[key] = _Histogram(WAIT_BUCKETS)
            histogram.observe(seconds)

    def _labels(self, namespace: str, revision: str) -> tuple[str, ...]:
        return (*revision_labels(namespace, revision), self.pod_name, CONTAINER_NAME)

    def collect(self) -> Iterator[Metric]:
        counts = CounterMetricFamily(
            "activator_request_count", "Requests the activator answered, by response code.", labels=_BY_CODE
        )
        latencies = HistogramMetricFamily(
            "activator_request_latencies",
            "Response time of requests answered by the activator (ms), by response code.",
            labels=_BY_CODE,
        )
        for (ns, rev, code), histogram in sorted(self.requests.items()):
            row = (*self._labels(ns, rev), str(code), f"{code // 100}xx")
            buckets = histogram.buckets()
            counts.add_metric(row, buckets[-1][1])
            latencies.add_metric(row, buckets, histogram.total)
        yield counts
        yield latencies
        rows = list(self.gauges())
        # Every revision the activator routes has its wait histograms from the start, zero until the
        # first wait: Prometheus' rate() and increase() see a series' first value as its start, so a
        # cold start that created the series would never show in a dashboard.
        known = {(row.namespace, row.revision) for row in rows}
        for name, help_text, waits in (
            ("kpa_activator_capacity_wait_seconds", "Time a request waited for a pod to have capacity.",
             self.waits),
            ("kpa_activator_cold_start_wait_seconds",
             "Time a request that found its revision without a pod waited for capacity (cold starts).",
             self.cold_waits),
        ):  # fmt: skip
            family = HistogramMetricFamily(name, help_text, labels=LABELS)
            for ns, rev in sorted(known | waits.keys()):
                histogram = waits.get((ns, rev), _NO_WAITS)
                family.add_metric(self._labels(ns, rev), histogram.buckets(), histogram.total)
            yield family
        for name, help_text, value in _GAUGES:
            gauge = GaugeMetricFamily(name, help_text, labels=LABELS)
            for gauges in rows:
                gauge.add_metric(self._labels(gauges.namespace, gauges.revision), value(gauges))
            yield gauge
        failures = CounterMetricFamily(
            "kpa_activator_stat_push_failures",
            "Stat batches the autoscaler did not accept.",
            labels=("pod_name", "container_name"),
        )
        failures.add_metric((self.pod_name, CONTAINER_NAME), self.stat_push_failures())
        yield failures

    def snapshot(self) -> ActivatorMetrics:
        """A copy of the counts with the gauges and push failures read now: its ``collect()`` touches
        nothing live, so a scrape renders it off the event loop (``autoscaler.exposition``). A few
        milliseconds at 1,000 revisions, where collecting and formatting take most of a second."""
        rows = tuple(self.gauges())
        failures = self.stat_push_failures()
        copy = ActivatorMetrics(lambda: rows, lambda: failures, self.pod_name)
        copy.requests = {key: histogram.copy() for key, histogram in self.requests.items()}
        copy.waits = {key: histogram.copy() for key, histogram in self.waits.items()}
        copy.cold_waits = {key: histogram.copy() for key, histogram in self.cold_waits.items()}
        return copy
