"""The queue-proxy's request metrics: plain counters per request, Prometheus text from prometheus-client.

Per request the queue-proxy does two dict/list increments (``observe``) and nothing of the library
runs. ``RequestMetrics`` is a prometheus-client collector: when ``/metrics`` is scraped it turns the
counters, and the gauges read from the live proxy at that moment, into metric families, and
``render`` writes them with ``generate_latest`` from the instance's own registry (never the global
one, so several proxies in one process do not collide). Names follow Knative's queue-proxy where one
exists (``revision_request_count``, ``revision_request_latencies`` in milliseconds,
``revision_queue_depth``, ``queue_average_concurrent_requests`` …).
"""

from __future__ import annotations

import re
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

# Knative's 1-2-5 latency buckets, in milliseconds.
LATENCY_BUCKETS_MS: tuple[float, ...] = (
    1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000, 50000, 100000,
)  # fmt: skip
_LE = (*(f"{bound:g}" for bound in LATENCY_BUCKETS_MS), "+Inf")

# Knative's queue-proxy exports this counter without the "_total" that prometheus-client's text writer
# appends to every counter's name; the name stays Knative's until the metrics are renamed (issue 14).
# Anchored at line starts: a label value holds no raw newline, so it is never rewritten.
_REQUEST_COUNT = "revision_request_count"
_WRITTEN_NAME = re.compile(rb"^(# HELP |# TYPE )?revision_request_count_total(?=[ {])", re.MULTILINE)

GaugeReading = tuple[str, str, float]
"""(name, help, value) of a gauge read from the live proxy when scraped."""


class RequestMetrics(Collector):
    """Counts answered requests by status code and their latency; ``render`` writes the text format.

    ``gauges`` is called on each scrape for the rows that are read, not counted (queue depth,
    concurrency, readiness …), so they can never drift from the proxy's state.
    """

    def __init__(self, pod_name: str, gauges: Callable[[], Iterable[GaugeReading]] = tuple) -> None:
        self.pod_name = pod_name
        self.gauges = gauges
        self.by_code: dict[int, int] = {}
        self.buckets = [0] * (len(LATENCY_BUCKETS_MS) + 1)
        self.latency_sum_ms = 0.0
        self.rejected = 0
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)

    def observe(self, status: int, latency_ms: float) -> None:
        by_code = self.by_code
        by_code[status] = by_code.get(status, 0) + 1
        self.buckets[bisect_left(LATENCY_BUCKETS_MS, latency_ms)] += 1
        self.latency_sum_ms += latency_ms

    def reject(self) -> None:
        self.rejected += 1

    def collect(self) -> Iterator[Metric]:
        pod = (self.pod_name,)
        requests = CounterMetricFamily(
            _REQUEST_COUNT,
            "Requests answered by the queue-proxy, by response code.",
            labels=("pod_name", "response_code", "response_code_class"),
        )
        for code, count in sorted(self.by_code.items()):
            requests.add_metric((*pod, str(code), f"{code // 100}xx"), count)
        yield requests
        latencies = HistogramMetricFamily(
            "revision_request_latencies",
            "Time from request arrival to the end of its response (ms).",
            labels=("pod_name",),
        )
        latencies.add_metric(pod, list(zip(_LE, accumulate(self.buckets), strict=True)), self.latency_sum_ms)
        yield latencies
        rejected = CounterMetricFamily(
            "queue_rejected_requests_total",
            "Requests refused at once: the breaker queue was full.",
            labels=("pod_name",),
        )
        rejected.add_metric(pod, self.rejected)
        yield rejected
        for name, help_text, value in self.gauges():
            gauge = GaugeMetricFamily(name, help_text, labels=("pod_name",))
            gauge.add_metric(pod, value)
            yield gauge

    def render(self) -> bytes:
        """The Prometheus text exposition (format 0.0.4) of this proxy's metrics."""
        return _WRITTEN_NAME.sub(rb"\1" + _REQUEST_COUNT.encode(), generate_latest(self.registry))
