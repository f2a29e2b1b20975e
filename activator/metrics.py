"""The activator's Prometheus metrics, kept as plain dicts and rendered in the text format on demand.

Updating a metric on the data path is one dict update; the text is built only when scraped. The
gauges (held requests, capacity, healthy pods) are not stored at all: they are read from the live
throttlers when rendered, so they can never drift from the truth.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from dataclasses import dataclass, field

# Seconds waited for capacity: from "a pod was free" (sub-millisecond) to a cold start of minutes.
WAIT_BUCKETS = (
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
)

Labels = tuple[str, str]  # (namespace, revision)


@dataclass
class _Histogram:
    counts: list[int] = field(default_factory=lambda: [0] * (len(WAIT_BUCKETS) + 1))
    total: float = 0.0

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


@dataclass
class ActivatorMetrics:
    requests: dict[tuple[str, str, int], int] = field(default_factory=dict)  # (ns, rev, code) -> count
    waits: dict[Labels, _Histogram] = field(default_factory=dict)

    def count_request(self, namespace: str, revision: str, code: int) -> None:
        key = (namespace, revision, code)
        self.requests[key] = self.requests.get(key, 0) + 1

    def observe_wait(self, namespace: str, revision: str, seconds: float) -> None:
        histogram = self.waits.get((namespace, revision))
        if histogram is None:
            histogram = self.waits[(namespace, revision)] = _Histogram()
        histogram.observe(seconds)

    def render(self, gauges: Iterable[RevisionGauges], stat_push_failures: int = 0) -> str:
        lines = [
            "# HELP activator_requests_total Requests answered by the activator, by revision and code.",
            "# TYPE activator_requests_total counter",
        ]
        for (ns, rev, code), count in sorted(self.requests.items()):
            labels = f'namespace="{ns}",revision="{rev}",code="{code}"'
            lines.append(f"activator_requests_total{{{labels}}} {count}")
        lines += [
            "# HELP activator_capacity_wait_seconds Time a request waited for a pod to have capacity.",
            "# TYPE activator_capacity_wait_seconds histogram",
        ]
        for (ns, rev), histogram in sorted(self.waits.items()):
            labels = f'namespace="{ns}",revision="{rev}"'
            cumulative = 0
            for bound, count in zip((*WAIT_BUCKETS, float("inf")), histogram.counts, strict=True):
                cumulative += count
                le = "+Inf" if bound == float("inf") else repr(bound)
                lines.append(f'activator_capacity_wait_seconds_bucket{{{labels},le="{le}"}} {cumulative}')
            lines.append(f"activator_capacity_wait_seconds_sum{{{labels}}} {histogram.total!r}")
            lines.append(f"activator_capacity_wait_seconds_count{{{labels}}} {cumulative}")
        rows = list(gauges)
        for name, help_text, attribute in (
            ("activator_held_requests", "Requests waiting for capacity now.", "held"),
            ("activator_in_flight_requests", "Requests being proxied to a pod now.", "in_flight"),
            ("activator_revision_capacity", "Requests it may send at once (cc x pods).", "capacity"),
            ("activator_healthy_pods", "Pods that passed a probe.", "healthy_pods"),
        ):
            lines += [f"# HELP {name} {help_text}", f"# TYPE {name} gauge"]
            for row in rows:
                value = getattr(row, attribute)
                lines.append(f'{name}{{namespace="{row.namespace}",revision="{row.revision}"}} {value}')
        lines += [
            "# HELP activator_stat_push_failures_total Stat batches the autoscaler did not accept.",
            "# TYPE activator_stat_push_failures_total counter",
            f"activator_stat_push_failures_total {stat_push_failures}",
        ]
        return "\n".join(lines) + "\n"
