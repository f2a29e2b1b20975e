"""The Stat record: what a queue-proxy reports each second and what the activator pushes; and the
revision labels, latency buckets and counter names every component's ``/metrics`` shares.

Field names follow Knative's ``Stat`` message so the JSON on the wire reads familiar; the wire
contract is documented in docs/wire-contracts.md. The metric conventions live here, beside
``RevisionKey``, because this is the one module the queue-proxy, the activator and the autoscaler
all import (docs/metrics.md).
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, fields
from typing import Any

_NUMBER_FIELDS = (
    "average_concurrent_requests",
    "average_proxied_concurrent_requests",
    "request_count",
    "proxied_request_count",
    "process_uptime",
    "timestamp",
)


@dataclass(frozen=True, slots=True, order=True)
class RevisionKey:
    """A revision's identity wherever stats and endpoints are exchanged (``{namespace, revision}``)."""

    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"


# Knative's per-revision metric labels, in this order, on every component's /metrics (docs/metrics.md).
REVISION_LABELS = ("namespace_name", "configuration_name", "revision_name", "service_name")
# Knative's 1-2-5 request latency buckets in milliseconds (queue-proxy's and activator's histograms).
LATENCY_BUCKETS_MS: tuple[float, ...] = (
    1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000, 50000, 100000,
)  # fmt: skip
_GENERATED_REVISION = re.compile(r"^(.*)-\d{5}$")


# Knative's counters that Knative exports without the "_total" prometheus-client's text writer appends.
KNATIVE_UNSUFFIXED_COUNTERS = (
    "revision_request_count", "revision_app_request_count", "activator_request_count",
)  # fmt: skip
_WRITTEN_TOTAL = re.compile(
    rb"^(# HELP |# TYPE )?(%b)_total(?=[ {])" % "|".join(KNATIVE_UNSUFFIXED_COUNTERS).encode(), re.MULTILINE
)


def knative_counter_names(text: bytes) -> bytes:
    """Prometheus text with Knative's unsuffixed counters named as Knative names them. Anchored at line
    starts: a label value holds no raw newline, so none is ever rewritten."""
    return _WRITTEN_TOTAL.sub(rb"\1\2", text)


def owner_name(revision: str) -> str:
    """The configuration (and service) a revision belongs to, when nothing names it: Knative names a
    configuration's revisions ``<configuration>-00001``, ``-00002`` …, so ``web-00001`` belongs to
    ``web``; any other name (ours: ``hello``) is its own configuration and service."""
    match = _GENERATED_REVISION.match(revision)
    return match.group(1) if match else revision


def revision_labels(
    namespace: str, revision: str, configuration: str = "", service: str = ""
) -> tuple[str, str, str, str]:
    """The values of ``REVISION_LABELS`` for a revision; an empty configuration or service name is
    derived with :func:`owner_name` (the service is the configuration's name, as a Knative Service's
    configuration is named after it)."""
    configuration = configuration or owner_name(revision)
    return namespace, configuration, revision, service or configuration


class StatError(ValueError):
    """A stat document that cannot be used; the message names the field and what was wrong."""


@dataclass(frozen=True, slots=True)
class Stat:
    pod_name: str
    average_concurrent_requests: float = 0.0
    average_proxied_concurrent_requests: float = 0.0
    request_count: float = 0.0
    proxied_request_count: float = 0.0
    process_uptime: float = 0.0
    timestamp: float = 0.0  # unix seconds; 0 means "stamp on receipt"

    @property
    def concurrency(self) -> float:
        """Concurrency the pod served for itself: the activator reports proxied requests on its own."""
        return self.average_concurrent_requests - self.average_proxied_concurrent_requests

    @property
    def rps(self) -> float:
        return self.request_count - self.proxied_request_count

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, doc: Any) -> Stat:
        """Parse a stat document, rejecting anything that would corrupt the windows."""
        if not isinstance(doc, dict):
            raise StatError(f"stat must be a JSON object, got {type(doc).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = set(doc) - known
        if unknown:
            raise StatError(f"stat has unknown field(s) {sorted(unknown)}; allowed: {sorted(known)}")
        pod_name = doc.get("pod_name", "")
        if not isinstance(pod_name, str):
            raise StatError(f"stat field pod_name={pod_name!r}: must be a string")
        values: dict[str, float] = {}
        for name in _NUMBER_FIELDS:
            raw = doc.get(name, 0.0)
            if isinstance(raw, bool) or not isinstance(raw, int | float) or not math.isfinite(raw):
                raise StatError(f"stat field {name}={raw!r}: must be a finite number")
            if raw < 0:
                raise StatError(f"stat field {name}={raw!r}: must not be negative")
            values[name] = float(raw)
        return cls(pod_name=pod_name, **values)

    def with_timestamp(self, timestamp: float) -> Stat:
        return Stat(
            pod_name=self.pod_name,
            average_concurrent_requests=self.average_concurrent_requests,
            average_proxied_concurrent_requests=self.average_proxied_concurrent_requests,
            request_count=self.request_count,
            proxied_request_count=self.proxied_request_count,
            process_uptime=self.process_uptime,
            timestamp=timestamp,
        )
