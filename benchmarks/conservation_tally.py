"""Conservation's count: every request sent, every answer by status, and every request without
exactly one complete answer (a ``Lost``, kept with when it went out and why).

Latencies and send times are compact arrays, so an hour-long soak stays in tens of megabytes.
"""

from __future__ import annotations

from array import array
from collections import Counter
from dataclasses import dataclass, field

from kpa.load import percentile

DOCUMENTED_ERRORS = frozenset({502, 503, 504})
"""Error answers the data path documents (docs/wire-contracts.md); any other non-2xx is a violation."""


@dataclass(frozen=True)
class Lost:
    """A request without exactly one complete answer: when it went out, on which connection, and why."""

    request: int
    connection: int
    sent_at: float  # seconds since the run started
    reason: str

    def __str__(self) -> str:
        if self.connection < 0:
            return f"a request counted by hey (no send time known): {self.reason}"
        where = f"request #{self.request} on connection {self.connection} sent at {self.sent_at:.3f}s"
        return f"{where}: {self.reason}"


@dataclass
class Tally:
    """Requests sent and what came back. Latencies and send times are compact arrays so an hour-long
    soak at a thousand requests a second stays in tens of megabytes."""

    sent: int = 0
    codes: Counter[int] = field(default_factory=Counter)
    lost: list[Lost] = field(default_factory=list)
    connect_errors: list[str] = field(default_factory=list)
    sent_at: array = field(default_factory=lambda: array("d"))  # answered requests only
    latency: array = field(default_factory=lambda: array("d"))
    status: array = field(default_factory=lambda: array("H"))

    @property
    def answered(self) -> int:
        return sum(self.codes.values())

    @property
    def ok(self) -> int:
        return sum(n for code, n in self.codes.items() if 200 <= code < 300)

    def errors(self) -> dict[int, int]:
        return {code: n for code, n in sorted(self.codes.items()) if not 200 <= code < 300}

    def record(self, sent_at: float, latency: float, code: int) -> None:
        self.codes[code] += 1
        self.sent_at.append(sent_at)
        self.latency.append(latency)
        self.status.append(code)

    def violations(self) -> list[str]:
        """Everything that breaks conservation, one line each: lost requests, undocumented codes,
        answers missing from the count, connections the stack refused."""
        found = [str(lost) for lost in self.lost]
        found += [
            f"{n} answers with undocumented status {code}"
            for code, n in self.errors().items()
            if code not in DOCUMENTED_ERRORS
        ]
        if self.sent != self.answered + len(self.lost):
            found.append(f"sent {self.sent} != answered {self.answered} + lost {len(self.lost)}")
        found += [f"connect failed: {error}" for error in self.connect_errors]
        return found

    def percentiles(self) -> tuple[float, float]:
        """p50 and p99 latency in seconds over every answer (NaN when there were none)."""
        if not self.latency:
            return float("nan"), float("nan")
        ordered = sorted(self.latency)
        return percentile(ordered, 50), percentile(ordered, 99)

    def merge(self, other: Tally) -> None:
        self.sent += other.sent
        self.codes.update(other.codes)
        self.lost += other.lost
        self.connect_errors += other.connect_errors
        self.sent_at.extend(other.sent_at)
        self.latency.extend(other.latency)
        self.status.extend(other.status)
