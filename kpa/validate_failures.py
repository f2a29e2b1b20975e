"""``kpa validate``'s failed requests, named one by one on both sides: when, in which phase, what, why.

A count ("failed 1") says that something went wrong, not what: a request the live stack lost, one a
pod refused, or one that waited out its timeout all count the same, and the last also holds a
concurrency of 1 in the autoscaler's windows for as long as it hangs, so it moves the scaling the
comparison is about. Each failed request is kept as a :class:`FailedRequest` — its arrival time, the
scenario's workload phase it was sent in, the HTTP status (0: no answer came) and the reason, the
live server's own words (its error body's first line, or the client's "timeout") or where the
simulated request was when it failed — and shown in a table of the first few, the rest counted, and
in ``validate.json`` (bounded: at most :data:`MAX_KEPT` per side, the rest counted).

Pure but for :class:`NamingSimulation`, which is the simulator with its two failure hooks overridden.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any

from rich.table import Table

from simulation.engine import Simulation
from simulation.pods import Request
from simulation.scenario import Scenario
from simulation.workloads import Workload

MAX_KEPT = 1_000  # failed requests kept per side (validate.json); beyond, only counted
DEFAULT_SHOWN = 20  # rows of the printed table per side


@dataclass(frozen=True, slots=True)
class FailedRequest:
    """One request that got no successful answer; times in seconds from the run's start."""

    time: float  # when it was sent (its arrival)
    status: int  # the HTTP status it got; 0 when no answer came at all
    phase: str  # the workload phase it was sent in (phase_label)
    reason: str
    after: float  # seconds from its arrival to its failure
    seed: int | None = None  # the simulated replicate's seed; None for the live run


@dataclass
class Failures:
    """The failed requests of one side, at most ``limit`` kept, all counted."""

    limit: int = MAX_KEPT
    count: int = 0
    kept: list[FailedRequest] = field(default_factory=list)

    def add(self, failure: FailedRequest) -> None:
        self.count += 1
        if len(self.kept) < self.limit:
            self.kept.append(failure)

    def extend(self, other: Failures) -> None:
        for failure in other.kept:
            self.add(failure)
        self.count += other.count - len(other.kept)

    def to_json(self) -> dict[str, Any]:
        rows = [{k: v for k, v in asdict(f).items() if v is not None} for f in self.kept]
        return {"count": self.count, "listed": rows, "not_listed": self.count - len(rows)}


def phase_label(workload: Workload, at: float) -> str:
    """The phase that sends at ``at``, as "3: constant 35–95 s" (its place in the scenario's list)."""
    start = 0.0
    for number, phase in enumerate(workload.phases, 1):
        end = start + phase.duration
        if at < end or number == len(workload.phases):
            kind = re.sub(r"(?<!^)(?=[A-Z])", "_", type(phase).__name__).lower()
            return f"{number}: {kind} {start:g}–{end:g} s"
        start = end
    return "after the workload"


def simulated_reason(request: Request, timed_out: bool) -> tuple[int, str]:
    """Status and reason of a simulated failure, read from where the request was when it failed."""
    if not timed_out:
        if request.proxied and request.grant is None:
            return 503, "activator: queue full (requests waiting for capacity at the queue bound)"
        return 503, "queue-proxy: pending request queue full"
    if request.pod is None:
        return 504, "activator request timeout: held for capacity until the revision timeout"
    if request.start < 0:
        return 504, "queue-proxy: request timeout while queued for a concurrency slot"
    return 504, "request timeout: still in service at the revision timeout"


class NamingSimulation(Simulation):
    """The simulator, keeping each failed request that arrived after the warm-up in :attr:`failures`."""

    def __init__(self, scenario: Scenario, seed: int, limit: int = MAX_KEPT) -> None:
        super().__init__(scenario, seed)
        self.failures = Failures(limit)

    def rejected(self, request: Request, now: float) -> None:
        super().rejected(request, now)
        self._name(request, now, timed_out=False)

    def timed_out(self, request: Request, now: float) -> None:
        super().timed_out(request, now)
        self._name(request, now, timed_out=True)

    def _name(self, request: Request, now: float, timed_out: bool) -> None:
        if request.arrival < self.warmup:
            return
        status, reason = simulated_reason(request, timed_out)
        label = phase_label(self.scenario.workload, request.arrival)
        self.failures.add(
            FailedRequest(request.arrival, status, label, reason, now - request.arrival, self.seed)
        )


def failures_table(live: Failures, simulated: Failures, shown: int = DEFAULT_SHOWN) -> Table | None:
    """Up to ``shown`` failed requests of each side, the rest counted in the caption; None if none."""
    if not live.count and not simulated.count:
        return None
    table = Table(title="failed requests")
    table.add_column("side", no_wrap=True)
    table.add_column("sent at", justify="right", no_wrap=True)
    table.add_column("phase", no_wrap=True)
    table.add_column("status", justify="right", no_wrap=True)
    table.add_column("after", justify="right", no_wrap=True)
    table.add_column("reason")  # the server's own words: the one column that wraps
    notes = []
    for name, side in (("live", live), ("simulated", simulated)):
        for failure in side.kept[:shown]:
            who = name if failure.seed is None else f"sim, seed {failure.seed}"
            status = str(failure.status) if failure.status else "no answer"
            table.add_row(
                who, f"{failure.time:.2f} s", failure.phase, status, f"{failure.after:.2f} s", failure.reason
            )
        rest = side.count - min(shown, len(side.kept))
        if rest:
            notes.append(f"{name}: {rest:,} more (validate.json lists up to {side.limit:,})")
    if notes:
        table.caption = "; ".join(notes)
    return table
