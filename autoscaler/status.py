"""The autoscaler service's outward view: the rows `kpa status` shows and their Prometheus families.

Kept apart from the loop (``autoscaler.service``) because it is read from outside — the `/status`
JSON of `kpa up` and `kpa controller`, and `/metrics` — and its names are wire contracts. The
collector reads a :class:`StatusSource` (the service) when scraped, so nothing is counted twice.
The families are Knative's autoscaler metrics where Knative has them, with Knative's labels and
meanings, and ``kpa_autoscaler_*`` for ours (docs/metrics.md).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from autoscaler.lifecycle import PROXY
from autoscaler.scaling import CONCURRENCY, RPS
from autoscaler.stat import REVISION_LABELS, RevisionKey, revision_labels

SCALE_DIRECTIONS = ("up", "down")


@dataclass(frozen=True, slots=True)
class RevisionStatus:
    """What `kpa status` shows for one revision (desired, want and requested: docs/autoscaler.md)."""

    namespace: str
    name: str
    requested_pods: int  # what the actuator was last told (its desired_scale)
    want: int  # the reconciler's desired_pods of its last decision (-1 unknown)
    ready_pods: int
    pods: int  # that exist, ready or not, terminating ones included
    mode: str
    state: str
    panicking: bool
    stable_concurrency: float  # the scaling metric's stable value: concurrency, or requests/s with rps
    panic_concurrency: float
    excess_burst_capacity: int
    target: float
    reason: str
    scrape_error: str | None
    pod_failure: str | None
    metric: str = CONCURRENCY  # the scaling metric: "concurrency" or "rps"
    pending_pods: int = 0  # asked for but not started: beyond the local capacity cap (0 on Kubernetes)
    terminating_pods: int = 0  # being stopped (the actuators hand over none: 0)

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
    def scale_events(self, ref: RevisionKey) -> Mapping[str, int]: ...


Gauge = tuple[str, str, Callable[[RevisionStatus], float]]
# (name, help, value from a status row): Knative's autoscaler gauges and ours, for every revision.
_GAUGES: tuple[Gauge, ...] = (
    ("autoscaler_desired_pods", "Pods the autoscaler wants (-1: not known yet)", lambda s: s.want),
    ("autoscaler_requested_pods", "Pods requested from the actuator", lambda s: s.requested_pods),
    ("autoscaler_actual_pods", "Ready pods", lambda s: s.ready_pods),
    ("autoscaler_not_ready_pods", "Pods that exist but are not ready",
     lambda s: s.pods - s.ready_pods - s.terminating_pods),
    ("autoscaler_pending_pods", "Pods asked for but not started", lambda s: s.pending_pods),
    ("autoscaler_terminating_pods", "Pods being stopped", lambda s: s.terminating_pods),
    ("autoscaler_panic_mode", "1 while the revision is in panic mode", lambda s: int(s.panicking)),
    ("autoscaler_excess_burst_capacity", "Excess burst capacity", lambda s: s.excess_burst_capacity),
    ("kpa_autoscaler_activator_in_path", "1 in proxy mode: requests go through the activator",
     lambda s: int(s.mode == PROXY)),
)  # fmt: skip
# As Knative reports them: only for the revisions whose scaling metric it is.
_METRIC_GAUGES: tuple[tuple[str, tuple[Gauge, ...]], ...] = (
    (CONCURRENCY, (
        ("autoscaler_stable_request_concurrency", "Revision-wide concurrency over the stable window",
         lambda s: s.stable_concurrency),
        ("autoscaler_panic_request_concurrency", "Revision-wide concurrency over the panic window",
         lambda s: s.panic_concurrency),
        ("autoscaler_target_concurrency_per_pod", "Concurrency the autoscaler aims for per pod",
         lambda s: s.target),
    )),
    (RPS, (
        ("autoscaler_stable_requests_per_second", "Revision-wide requests per second over the stable window",
         lambda s: s.stable_concurrency),
        ("autoscaler_panic_requests_per_second", "Revision-wide requests per second over the panic window",
         lambda s: s.panic_concurrency),
        ("autoscaler_target_requests_per_second", "Requests per second the autoscaler aims for per pod",
         lambda s: s.target),
    )),
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class _Read:
    """A :class:`StatusSource` as read at one moment (``AutoscalerMetrics.snapshot``)."""

    stats_received: int
    stats_rejected: int
    rows: list[RevisionStatus]
    refs: list[RevisionKey]
    failures: dict[RevisionKey, int]
    events: dict[RevisionKey, dict[str, int]]

    def status(self) -> list[RevisionStatus]:
        return self.rows

    def revisions(self) -> list[RevisionKey]:
        return self.refs

    def scrape_failures(self, ref: RevisionKey) -> int:
        return self.failures[ref]

    def scale_events(self, ref: RevisionKey) -> Mapping[str, int]:
        return self.events[ref]


class AutoscalerMetrics(Collector):
    """The service's Prometheus families, read from it when scraped (a prometheus-client collector).

    Nothing is counted twice: the gauges are the rows of ``status()`` and the counters the service's
    own. It is registered nowhere (never in the global registry): ``kpa up`` renders it beside the
    embedded activator's with ``autoscaler.exposition``, and tests run several services in one process.
    """

    def __init__(self, service: StatusSource) -> None:
        self._service = service

    def snapshot(self) -> AutoscalerMetrics:
        """The service read now: its ``collect()`` builds the families from that copy, off the event
        loop (``autoscaler.exposition``)."""
        service = self._service
        refs = list(service.revisions())
        return AutoscalerMetrics(
            _Read(
                service.stats_received,
                service.stats_rejected,
                list(service.status()),
                refs,
                {ref: service.scrape_failures(ref) for ref in refs},
                {ref: dict(service.scale_events(ref)) for ref in refs},
            )
        )

    def collect(self) -> Iterator[Metric]:
        service = self._service
        rows = [(revision_labels(row.namespace, row.name), row) for row in service.status()]
        for name, help_text, value in _GAUGES:
            gauge = GaugeMetricFamily(name, help_text, labels=REVISION_LABELS)
            for labels, row in rows:
                gauge.add_metric(labels, value(row))
            yield gauge
        for metric, gauges in _METRIC_GAUGES:
            for name, help_text, value in gauges:
                gauge = GaugeMetricFamily(name, help_text, labels=REVISION_LABELS)
                for labels, row in rows:
                    if row.metric == metric:
                        gauge.add_metric(labels, value(row))
                yield gauge
        refs = [(revision_labels(ref.namespace, ref.name), ref) for ref in service.revisions()]
        events = CounterMetricFamily(
            "kpa_autoscaler_scale_events",
            "Changes of the requested pods, by direction",
            labels=(*REVISION_LABELS, "direction"),
        )
        failures = CounterMetricFamily(
            "kpa_autoscaler_scrape_failures", "Scrape ticks that recorded nothing", labels=REVISION_LABELS
        )
        for labels, ref in refs:
            counted = service.scale_events(ref)
            for direction in SCALE_DIRECTIONS:
                events.add_metric((*labels, direction), counted.get(direction, 0))
            failures.add_metric(labels, service.scrape_failures(ref))
        yield events
        yield failures
        yield CounterMetricFamily(
            "kpa_autoscaler_stats_received", "Stats pushed by the activator", value=service.stats_received
        )
        yield CounterMetricFamily(
            "kpa_autoscaler_stats_rejected",
            "Pushed stats for unknown revisions",
            value=service.stats_rejected,
        )
