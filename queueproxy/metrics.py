"""The queue-proxy's request metrics: plain counters per request, Prometheus text from prometheus-client.

Per request the queue-proxy does a few list/dict increments (``observe``, and ``observe_app`` for a
request the user container answered) and nothing of the library runs. ``RequestMetrics`` is a
prometheus-client collector: when ``/metrics`` is scraped it turns the counters, and the gauges read
from the live proxy at that moment, into metric families, and ``render`` writes them with
``generate_latest`` from the instance's own registry (never the global one, so several proxies in one
process do not collide). Names and labels are Knative's queue-proxy ones (``revision_request_count``,
``revision_request_latencies`` in milliseconds, ``revision_app_request_*``, ``revision_queue_depth``,
``queue_average_concurrent_requests`` …); our additions start with ``kpa_`` (docs/metrics.md).
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator
from itertools import accumulate

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from autoscaler.stat import LATENCY_BUCKETS_MS, REVISION_LABELS, knative_counter_names, revision_labels

_LE = (*(f"{bound:g}" for bound in LATENCY_BUCKETS_MS), "+Inf")
CONTAINER_NAME = "queue-proxy"
LABELS = (*REVISION_LABELS, "pod_name", "container_name")
_BY_CODE = (*LABELS, "response_code", "response_code_class")

_REQUEST_COUNT = "revision_request_count"
_APP_REQUEST_COUNT = "revision_app_request_count"

GaugeReading = tuple[str, str, float]
"""(name, help, value) of a gauge read from the live proxy when scraped."""


class _Latencies:
    """One response code's latency histogram; its count is the request count."""

    __slots__ = ("buckets", "sum_ms")

    def __init__(self) -> None:
        self.buckets = [0] * (len(LATENCY_BUCKETS_MS) + 1)
        self.sum_ms = 0.0


def _observe(by_code: dict[int, _Latencies], status: int, latency_ms: float) -> None:
    latencies = by_code.get(status)
    if latencies is None:
        latencies = by_code[status] = _Latencies()
    latencies.buckets[bisect_left(LATENCY_BUCKETS_MS, latency_ms)] += 1
    latencies.sum_ms += latency_ms


class RequestMetrics(Collector):
    """Counts answered requests and their latency by status code; ``render`` writes the text format.

    ``observe`` counts every request the queue-proxy answered (its own 503s and 504s included);
    ``observe_app`` only those the user container answered, timed from their dispatch to it.
    ``gauges`` is called on each scrape for the rows that are read, not counted (queue depth,
    concurrency, readiness …), so they can never drift from the proxy's state.
    """

    def __init__(
        self,
        pod_name: str,
        gauges: Callable[[], Iterable[GaugeReading]] = tuple,
        *,
        namespace: str = "",
        revision: str = "",
        configuration: str = "",
        service: str = "",
    ) -> None:
        revision_values = revision_labels(namespace, revision, configuration, service)
        self.labels = (*revision_values, pod_name, CONTAINER_NAME)
        self.gauges = gauges
        self.requests: dict[int, _Latencies] = {}
        self.app_requests: dict[int, _Latencies] = {}
        self.rejected = 0
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)

    def observe(self, status: int, latency_ms: float) -> None:
        _observe(self.requests, status, latency_ms)

    def observe_app(self, status: int, latency_ms: float) -> None:
        _observe(self.app_requests, status, latency_ms)

    def reject(self) -> None:
        self.rejected += 1

    def collect(self) -> Iterator[Metric]:
        labels = self.labels
        for count_name, latency_name, what, by_code in (
            (_REQUEST_COUNT, "revision_request_latencies", "answered by the queue-proxy", self.requests),
            (_APP_REQUEST_COUNT, "revision_app_request_latencies", "answered by the user container",
             self.app_requests),
        ):  # fmt: skip
            counts = CounterMetricFamily(count_name, f"Requests {what}, by response code.", labels=_BY_CODE)
            latencies = HistogramMetricFamily(
                latency_name, f"Response time of requests {what} (ms), by response code.", labels=_BY_CODE
            )
            for code, histogram in sorted(by_code.items()):
                row = (*labels, str(code), f"{code // 100}xx")
                cumulative = list(accumulate(histogram.buckets))
                counts.add_metric(row, cumulative[-1])
                latencies.add_metric(row, list(zip(_LE, cumulative, strict=True)), histogram.sum_ms)
            yield counts
            yield latencies
        rejected = CounterMetricFamily(
            "kpa_queue_rejected_requests",
            "Requests refused at once with 503: the breaker queue was full.",
            labels=LABELS,
        )
        rejected.add_metric(labels, self.rejected)
        yield rejected
        for name, help_text, value in self.gauges():
            gauge = GaugeMetricFamily(name, help_text, labels=LABELS)
            gauge.add_metric(labels, value)
            yield gauge

    def render(self) -> bytes:
        """The Prometheus text exposition (format 0.0.4) of this proxy's metrics."""
        return knative_counter_names(generate_latest(self.registry))
