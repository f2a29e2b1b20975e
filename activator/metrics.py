"""The activator's Prometheus metrics: plain dicts on the data path, text from prometheus-client.

Updating a metric on the data path is one dict update; nothing of the library runs then.
``ActivatorMetrics`` is a prometheus-client collector on its own registry (never the global one:
``kpa up`` embeds the activator and tests run several): when scraped it turns the counters into
metric families. The gauges (held requests, capacity, healthy pods) are not stored at all: they are
read from the live throttlers when scraped, so they can never drift from the truth.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from itertools import accumulate

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

# Seconds waited for capacity: from "a pod was free" (sub-millisecond) to a cold start of minutes.
WAIT_BUCKETS = (
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
)  # fmt: skip
_LE = (*(repr(bound) for bound in WAIT_BUCKETS), "+Inf")
_REVISION = ("namespace", "revision")

Labels = tuple[str, str]  # (namespace, revision)


class _Histogram:
    __slots__ = ("counts", "total")

    def __init__(self) -> None:
        self.counts = [0] * (len(WAIT_BUCKETS) + 1)
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(WAIT_BUCKETS, value)] += 1
        self.total += value


@dataclass(frozen=True, slots=True)
class RevisionGauges:
    namespace: str
    revision: str
    held: int
    in_flight: int
    capacity: int
    healthy_pods: int


# (name, help, RevisionGauges attribute): the gauges, one family each.
_GAUGES = (
    ("activator_held_requests", "Requests waiting for capacity now.", "held"),
    ("activator_in_flight_requests", "Requests being proxied to a pod now.", "in_flight"),
    ("activator_revision_capacity", "Requests it may send at once (cc x pods).", "capacity"),
    ("activator_healthy_pods", "Pods that passed a probe.", "healthy_pods"),
)


class ActivatorMetrics(Collector):
    """Requests by revision and code, waits for capacity; gauges and push failures read when scraped.

    ``gauges`` yields one row per revision and ``stat_push_failures`` the stat batches the
    autoscaler did not accept, both called on each scrape.
    """

    def __init__(
        self,
        gauges: Callable[[], Iterable[RevisionGauges]] = tuple,
        stat_push_failures: Callable[[], int] = lambda: 0,
    ) -> None:
        self.gauges = gauges
        self.stat_push_failures = stat_push_failures
        self.requests: dict[tuple[str, str, int], int] = {}  # (ns, rev, code) -> count
        self.waits: dict[Labels, _Histogram] = {}
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)

    def count_request(self, namespace: str, revision: str, code: int) -> None:
        key = (namespace, revision, code)
        self.requests[key] = self.requests.get(key, 0) + 1

    def observe_wait(self, namespace: str, revision: str, seconds: float) -> None:
        histogram = self.waits.get((namespace, revision))
        if histogram is None:
            histogram = self.waits[(namespace, revision)] = _Histogram()
        histogram.observe(seconds)

    def collect(self) -> Iterator[Metric]:
        requests = CounterMetricFamily(
            "activator_requests_total",
            "Requests answered by the activator, by revision and code.",
            labels=(*_REVISION, "code"),
        )
        for (ns, rev, code), count in sorted(self.requests.items()):
            requests.add_metric((ns, rev, str(code)), count)
        yield requests
        waits = HistogramMetricFamily(
            "activator_capacity_wait_seconds",
            "Time a request waited for a pod to have capacity.",
            labels=_REVISION,
        )
        for labels, histogram in sorted(self.waits.items()):
            buckets = list(zip(_LE, accumulate(histogram.counts), strict=True))
            waits.add_metric(labels, buckets, histogram.total)
        yield waits
        rows = list(self.gauges())
        for name, help_text, attribute in _GAUGES:
            gauge = GaugeMetricFamily(name, help_text, labels=_REVISION)
            for row in rows:
                gauge.add_metric((row.namespace, row.revision), getattr(row, attribute))
            yield gauge
        yield CounterMetricFamily(
            "activator_stat_push_failures_total",
            "Stat batches the autoscaler did not accept.",
            value=self.stat_push_failures(),
        )

    def render(self) -> bytes:
        """The Prometheus text exposition (format 0.0.4) of this activator's metrics."""
        return generate_latest(self.registry)
