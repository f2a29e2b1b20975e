"""What a simulation run produced: ``report.json`` and ``timeline.csv``.

The report's keys are a contract (external validation reads them): ``requests``, ``completed``,
``rejected``, ``timed_out``, ``latency`` {mean, p50, p95, p99}, ``wait`` {mean, p95},
``cold_start_requests``, ``pod_seconds``, ``ready_pods`` {mean, max}, ``scale_events``,
``simulated_seconds``, ``wall_seconds``. Request figures cover requests that arrived after the
warm-up; pod figures cover the window from the warm-up to the end of the scenario.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable
from dataclasses import asdict, fields
from pathlib import Path
from types import TracebackType
from typing import Any

from simulation.engine import Simulation, TimelineRow
from simulation.fleet import PodLife
from simulation.sample import Sample

TIMELINE_COLUMNS = [f.name for f in fields(TimelineRow)]
PLOT_ROWS = 50_000  # timeline rows kept for the plot; a longer run is plotted every 2nd, 4th, ... second


def _percentiles(sample: Sample, keys: dict[str, float | None]) -> dict[str, float | None]:
    """Mean (q None) and percentiles; exact while the sample is, else within its stated accuracy."""
    return {name: sample.mean() if q is None else sample.percentile(q) for name, q in keys.items()}


def _overlap(start: float, end: float, lo: float, hi: float) -> float:
    return max(0.0, min(end, hi) - max(start, lo))


def pod_seconds(pods: Iterable[PodLife], lo: float, hi: float) -> float:
    """Seconds pods existed (starting, ready or draining) within ``[lo, hi]``: what the revision costs."""
    return sum(_overlap(pod.created, pod.gone_at if pod.gone_at is not None else hi, lo, hi) for pod in pods)


def ready_pod_stats(pods: Iterable[PodLife], lo: float, hi: float) -> dict[str, float]:
    """Time-weighted mean and the maximum of the ready pod count within ``[lo, hi]``."""
    changes: list[tuple[float, int]] = []
    for pod in pods:
        if pod.ready_at is not None:
            left = pod.unready_at if pod.unready_at is not None else hi
            changes += [(pod.ready_at, 1), (left, -1)]
    changes.sort()  # at equal times departures (-1) come first
    count, i = 0, 0
    while i < len(changes) and changes[i][0] <= lo:
        count += changes[i][1]
        i += 1
    peak, area, last = count, 0.0, lo
    for at, step in changes[i:]:
        if at >= hi:
            break
        area += count * (at - last)
        last = at
        count += step
        peak = max(peak, count)
    area += count * (hi - last)
    return {"mean": area / (hi - lo), "max": peak}


def summarize(sim: Simulation) -> dict[str, Any]:
    scenario = sim.scenario
    counters = sim.counters
    lo, hi = scenario.warmup, scenario.duration
    settings = scenario.settings
    spec = settings.spec
    lives = sim.fleet.lives()
    return {
        "requests": counters.requests,
        "completed": counters.completed,
        "rejected": counters.rejected,
        "timed_out": counters.timed_out,
        "latency": _percentiles(counters.latencies, {"mean": None, "p50": 50, "p95": 95, "p99": 99}),
        "wait": _percentiles(counters.waits, {"mean": None, "p95": 95}),
        "cold_start_requests": counters.cold,
        "pod_seconds": pod_seconds(lives, lo, hi),
        "ready_pods": ready_pod_stats(lives, lo, hi),
        "scale_events": sim.fleet.scale_events,
        "simulated_seconds": scenario.duration,
        "wall_seconds": sim.wall_seconds,
        "warmup": scenario.warmup,
        "seed": sim.seed,
        "drain_seconds": sim.drain_seconds,
        "requests_per_wall_second": sim.arrivals / sim.wall_seconds if sim.wall_seconds else None,
        **({} if sim.models is None else {"models": sim.models.counters.report()}),
        "settings": {
            "container_concurrency": settings.container_concurrency,
            "target_value": spec.target_value,
            "total_value": spec.total_value,
            "target_burst_capacity": spec.target_burst_capacity,
            "stable_window": settings.stable_window,
            "panic_window": settings.panic_window,
            "panic_threshold": spec.panic_threshold,
            "min_scale": settings.min_scale,
            "max_scale": settings.max_scale,
            "initial_scale": settings.initial_scale,
            "scale_to_zero_grace_period": settings.scale_to_zero_grace_period,
        },
    }


def write_report(report: dict[str, Any], path: Path) -> None:
    path.write_text(json.dumps(report, indent=2) + "\n")


def _csv_values(row: TimelineRow) -> list[Any]:
    values = [getattr(row, name) for name in TIMELINE_COLUMNS]
    values[TIMELINE_COLUMNS.index("stable_concurrency")] = round(row.stable_concurrency, 4)
    values[TIMELINE_COLUMNS.index("panic_concurrency")] = round(row.panic_concurrency, 4)
    values[TIMELINE_COLUMNS.index("panicking")] = int(row.panicking)
    return values


class TimelineWriter:
    """A :class:`Simulation` timeline sink: each row goes to ``timeline.csv`` as soon as it is complete.

    Memory stays flat however long the run: besides the open file it keeps at most
    :data:`PLOT_ROWS` rows for the plot (every row of a short run; of a longer one, the rows of every
    ``stride``-th second, ``stride`` doubling each time the kept rows would pass the bound).
    """

    def __init__(self, path: Path, plot_rows: int = PLOT_ROWS) -> None:
        """``plot_rows`` 0 keeps nothing (no plot wanted)."""
        self._handle = path.open("w", newline="")
        self._writer = csv.writer(self._handle)
        self._writer.writerow(TIMELINE_COLUMNS)
        self._kept: list[TimelineRow] = []
        self._limit = plot_rows
        self.stride = 1  # seconds between rows kept for the plot

    def __call__(self, row: TimelineRow) -> None:
        self._writer.writerow(_csv_values(row))
        if self._limit and row.second % self.stride == 0:
            self._kept.append(row)
            if len(self._kept) > self._limit:
                self._kept = self._kept[::2]
                self.stride *= 2

    def plot_rows(self) -> list[dict[str, Any]]:
        """The kept rows as dicts, for :func:`simulation.plots.plot_timeline`."""
        return [asdict(row) for row in self._kept]

    def __enter__(self) -> TimelineWriter:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self._handle.close()
