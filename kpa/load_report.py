"""What a load run measured: one record per request, and the summary `kpa load` prints and writes as JSON
(pure: no clock, no I/O; the runner hands in the times).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from kpa.load_phases import Phase


@dataclass(slots=True)
class Record:
    sent_at: float  # seconds since the run started (scheduled instant)
    latency: float  # seconds from the scheduled instant to the response (or failure)
    status: int  # 0 when no response
    error: str
    phase: int
    cold: bool = False  # the activator held it while a pod started


@dataclass
class LoadResult:
    phases: list[Phase]
    records: list[Record] = field(default_factory=list)
    duration: float = 0.0

    def summary(self) -> dict[str, Any]:
        latencies = sorted(r.latency for r in self.records if 200 <= r.status < 300)
        outcomes = Counter(str(r.status) if r.status else r.error for r in self.records)
        ok = sum(1 for r in self.records if 200 <= r.status < 300)
        return {
            "requests": len(self.records),
            "ok": ok,
            "failed": len(self.records) - ok,
            "outcomes": dict(sorted(outcomes.items())),
            "cold_start_requests": sum(1 for r in self.records if r.cold),
            "duration_s": round(self.duration, 3),
            "throughput_rps": round(len(self.records) / self.duration, 2) if self.duration else 0.0,
            "latency_ms": {
                name: round(percentile(latencies, q) * 1000, 2) if latencies else None
                for name, q in (("p50", 50), ("p90", 90), ("p99", 99), ("max", 100))
            },
        }

    def to_json(self, with_records: bool = False) -> dict[str, Any]:
        doc: dict[str, Any] = {"phases": [p.label for p in self.phases], "summary": self.summary()}
        if with_records:
            doc["records"] = [
                {
                    "sent_at": round(r.sent_at, 4),
                    "latency": round(r.latency, 5),
                    "status": r.status,
                    "error": r.error,
                    "phase": r.phase,
                    "cold": r.cold,
                }
                for r in self.records
            ]
        return doc


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of an ascending sequence (q in [0, 100])."""
    if not sorted_values:
        raise ValueError("percentile of no values")
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]
