"""The Stat record: what a queue-proxy reports each second and what the activator pushes.

Field names follow Knative's ``Stat`` message so the JSON on the wire reads familiar; the wire
contract is documented in docs/wire-contracts.md.
"""

from __future__ import annotations

import math
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
