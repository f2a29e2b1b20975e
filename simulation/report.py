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
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

import numpy as np

from simulation.engine import Simulation, TimelineRow
from simulation.pods import Pod

TIMELINE_COLUMNS = [f.name for f in fields(TimelineRow)] + [
    "arrivals",
    "completions",
    "rejections",
    "timeouts",
]


def _percentiles(values: list[float], keys: dict[str, float | None]) -> dict[str, float | None]:
    if not values:
        return dict.fromkeys(keys)
    data = np.asarray(values)
    result: dict[str, float | None] = {}
    for name, q in keys.items():
        result[name] = float(data.mean()) if q is None else float(np.percentile(data, q))
    return result


def _overlap(start: float, end: float, lo: float, hi: float) -> float:
    return max(0.0, min(end, hi) - max(start, lo))


def pod_seconds(pods: list[Pod], lo: float, hi: float) -> float:
    """Seconds pods existed (starting, ready or draining) within ``[lo, hi]``: what the revision costs."""
    return sum(_overlap(pod.created, pod.gone_at if pod.gone_at is not None else hi, lo, hi) for pod in pods)


def ready_pod_stats(pods: list[Pod], lo: float, hi: float) -> dict[str, float]:
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
    return {
        "requests": counters.requests,
        "completed": counters.completed,
        "rejected": counters.rejected,
        "timed_out": counters.timed_out,
        "latency": _percentiles(counters.latencies, {"mean": None, "p50": 50, "p95": 95, "p99": 99}),
        "wait": _percentiles(counters.waits, {"mean": None, "p95": 95}),
        "cold_start_requests": counters.cold,
        "pod_seconds": pod_seconds(sim.pods, lo, hi),
        "ready_pods": ready_pod_stats(sim.pods, lo, hi),
        "scale_events": sim.scale_events,
        "simulated_seconds": scenario.duration,
        "wall_seconds": sim.wall_seconds,
        "warmup": scenario.warmup,
        "seed": sim.seed,
        "drain_seconds": sim.drain_seconds,
        "requests_per_wall_second": sum(sim.arrivals_per_second) / sim.wall_seconds
        if sim.wall_seconds
        else None,
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


def timeline_rows(sim: Simulation) -> list[dict[str, Any]]:
    rows = []
    for row in sim.timeline:
        second = row.second
        record = asdict(row)
        record["arrivals"] = sim.arrivals_per_second[second]
        record["completions"] = sim.completions_per_second[second]
        record["rejections"] = sim.rejections_per_second[second]
        record["timeouts"] = sim.timeouts_per_second[second]
        rows.append(record)
    return rows


def write_timeline(sim: Simulation, path: Path) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=TIMELINE_COLUMNS)
        writer.writeheader()
        for record in timeline_rows(sim):
            for key in ("stable_concurrency", "panic_concurrency"):
                record[key] = round(record[key], 4)
            record["panicking"] = int(record["panicking"])
            writer.writerow(record)
