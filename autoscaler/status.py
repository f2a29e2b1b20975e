"""The autoscaler service's outward view: the rows `kpa status` shows and their Prometheus families.

Kept apart from the loop (``autoscaler.service``) because it is read from outside — the `/status`
JSON of `kpa up` and `kpa controller`, and `/metrics` — and its names are wire contracts. The
collector reads a :class:`StatusSource` (the service) when scraped, so nothing is counted twice.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from autoscaler.lifecycle import PROXY
from autoscaler.stat import RevisionKey


@dataclass(frozen=True, slots=True)
class RevisionStatus:
    """What `kpa status` shows for one revision (desired, want and requested: docs/autoscaler.md)."""

    namespace: str
    name: str
    requested_pods: int  # what the actuator was last told (its desired_scale)
    want: int  # the reconciler's desired_pods of its last decision (-1 unknown)
    ready_pods: int
    pods: int
    mode: str
    state: str
    panicking: bool
    stable_concurrency: float
    panic_concurrency: float
    excess_burst_capacity: int
    target: float
    reason: str
    scrape_error: str | None
    pod_failure: str | None

    def to_json(self) -> dict[str, Any]:
        """The `/status` row. Its keys are a wire contract older than these names: the requested pods
        go out as ``desired_pods`` (docs/local-stack.md)."""
        return {_WIRE_NAMES.get(field, field): getattr(self, field) for field in self.__dataclass_fields__}


_WIRE_NAMES = {"requested_pods": "desired_pods"}


class StatusSource(Protocol):
    """What the collector reads from the service when scraped."""

    @property
    def stats_received(self) -> int: ...
    @property
    def stats_rejected(self) -> int: ...
    def status(self) -> list[RevisionStatus]: ...
    def revisions(self) -> list[RevisionKey]: ...
    def scrape_failures(self, ref: RevisionKey) -> int: ...


# (name, help, value from a status row): Knative's autoscaler gauges, labelled namespace and revision.
_GAUGES: tuple[tuple[str, str, Callable[[RevisionStatus], float]], ...] = (
    ("autoscaler_desired_pods", "Pods the autoscaler wants", lambda s: s.want),
    ("autoscaler_requested_pods", "Pods requested from the actuator", lambda s: s.requested_pods),
    ("autoscaler_ready_pods", "Ready pods", lambda s: s.ready_pods),
    ("autoscaler_actual_pods", "Pods that exist (ready or not)", lambda s: s.pods),
    ("autoscaler_panic_mode", "1 while the revision is in panic mode", lambda s: int(s.panicking)),
    ("autoscaler_stable_request_concurrency", "Average concurrency over the stable window",
     lambda s: s.stable_concurrency),
    ("autoscaler_panic_request_concurrency", "Average concurrency over the panic window",
     lambda s: s.panic_concurrency),
    ("autoscaler_target_concurrency_per_pod", "Target concurrency per pod", lambda s: s.target),
    ("autoscaler_excess_burst_capacity", "Excess burst capacity", lambda s: s.excess_burst_capacity),
    ("autoscaler_activator_in_path", "1 in proxy mode", lambda s: int(s.mode == PROXY)),
)  # fmt: skip
_REVISION = ("namespace", "revision")


class AutoscalerMetrics(Collector):
    """The service's Prometheus families, read from it when scraped (a prometheus-client collector).

    Nothing is counted twice: the gauges are the rows of ``status()`` and the counters the service's
    own. Its registry is its own, not the global one, so ``kpa up`` can scrape it beside the
    embedded activator's and tests can run several services in one process.
    """

    def __init__(self, service: StatusSource) -> None:
        self._service = service
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)

    def collect(self) -> Iterator[Metric]:
        service = self._service
        rows = service.status()
        for name, help_text, value in _GAUGES:
            gauge = GaugeMetricFamily(name, help_text, labels=_REVISION)
            for row in rows:
                gauge.add_metric((row.namespace, row.name), value(row))
            yield gauge
        failures = CounterMetricFamily(
            "autoscaler_scrape_failures_total", "Scrape ticks that recorded nothing", labels=_REVISION
        )
        for ref in service.revisions():
            failures.add_metric((ref.namespace, ref.name), service.scrape_failures(ref))
        yield failures
        yield CounterMetricFamily(
            "autoscaler_stats_received_total", "Stats pushed by the activator", value=service.stats_received
        )
        yield CounterMetricFamily(
            "autoscaler_stats_rejected_total",
            "Pushed stats for unknown revisions",
            value=service.stats_rejected,
        )

    def render(self) -> bytes:
        """The Prometheus text exposition (format 0.0.4) of the service's metrics."""
        return generate_latest(self.registry)
