"""Request metrics in the Prometheus text format, written by hand to stay off the hot path.

Per request the queue-proxy does two dict/list increments (``observe``); all formatting happens
when ``/metrics`` is scraped. Names follow Knative's queue-proxy where one exists
(``revision_request_count``, ``revision_request_latencies`` in milliseconds, ``revision_queue_depth``,
``queue_average_concurrent_requests`` …).
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable

# Knative's 1-2-5 latency buckets, in milliseconds.
LATENCY_BUCKETS_MS: tuple[float, ...] = (
    1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000, 50000, 100000,
)  # fmt: skip


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class RequestMetrics:
    """Counts answered requests by status code and their latency; ``render`` writes the text format."""

    def __init__(self, pod_name: str) -> None:
        self.labels = f'pod_name="{_escape(pod_name)}"'
        self.by_code: dict[int, int] = {}
        self.buckets = [0] * (len(LATENCY_BUCKETS_MS) + 1)
        self.latency_sum_ms = 0.0
        self.rejected = 0

    def observe(self, status: int, latency_ms: float) -> None:
        by_code = self.by_code
        by_code[status] = by_code.get(status, 0) + 1
        self.buckets[bisect_left(LATENCY_BUCKETS_MS, latency_ms)] += 1
        self.latency_sum_ms += latency_ms

    def reject(self) -> None:
        self.rejected += 1

    def render(self, gauges: Iterable[tuple[str, str, float]] = ()) -> bytes:
        """The exposition text; ``gauges`` adds (name, help, value) rows read at scrape time."""
        labels = self.labels
        lines = [
            "# HELP revision_request_count Requests answered by the queue-proxy, by response code.",
            "# TYPE revision_request_count counter",
        ]
        for code in sorted(self.by_code):
            code_labels = f'{labels},response_code="{code}",response_code_class="{code // 100}xx"'
            lines.append(f"revision_request_count{{{code_labels}}} {self.by_code[code]}")
        lines += [
            "# HELP revision_request_latencies Time from request arrival to the end of its response (ms).",
            "# TYPE revision_request_latencies histogram",
        ]
        cumulative = 0
        for bound, count in zip(LATENCY_BUCKETS_MS, self.buckets, strict=False):
            cumulative += count
            lines.append(f'revision_request_latencies_bucket{{{labels},le="{bound:g}"}} {cumulative}')
        cumulative += self.buckets[-1]
        lines += [
            f'revision_request_latencies_bucket{{{labels},le="+Inf"}} {cumulative}',
            f"revision_request_latencies_sum{{{labels}}} {self.latency_sum_ms:.3f}",
            f"revision_request_latencies_count{{{labels}}} {cumulative}",
            "# HELP queue_rejected_requests_total Requests refused at once: the breaker queue was full.",
            "# TYPE queue_rejected_requests_total counter",
            f"queue_rejected_requests_total{{{labels}}} {self.rejected}",
        ]
        for name, help_text, value in gauges:
            lines += [f"# HELP {name} {help_text}", f"# TYPE {name} gauge", f"{name}{{{labels}}} {value:g}"]
        return ("\n".join(lines) + "\n").encode()
