"""What a many-revision run produced: ``report.json`` (per revision and totals), ``timeline.csv`` of
the totals, a table of the top revisions and ``timeline.png``.

Per revision the figures are one-revision report.json's (same keys, same meaning, same code:
:func:`simulation.report.summarize`) plus ``name`` and ``pending`` (its pods that waited for room on
a node: how many, pod-seconds spent waiting, the longest wait). ``totals`` adds them up — requests,
outcomes, cold starts, pod-seconds, scale events and pending figures are sums over revisions; latency
and wait percentiles are over every request of every revision; ``ready_pods`` is the time-weighted
mean and the peak of all ready pods together.
"""

from __future__ import annotations

import csv
from dataclasses import astuple
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
from rich.table import Table

from simulation.many import TOTAL_COLUMNS, ManySimulation, TotalRow
from simulation.report import PLOT_ROWS, ready_pod_stats, summarize
from simulation.sample import Sample

_PER_REVISION = (
    "requests", "completed", "rejected", "timed_out", "latency", "wait", "cold_start_requests",
    "pod_seconds", "ready_pods", "scale_events",
)  # fmt: skip
_SUMMED = (
    "requests",
    "completed",
    "rejected",
    "timed_out",
    "cold_start_requests",
    "pod_seconds",
    "scale_events",
)


def _pooled(samples: list[Sample], quantiles: dict[str, float | None]) -> dict[str, float | None]:
    """Mean and percentiles over several samples' values (None while any is past its exact limit)."""
    if not all(sample.exact for sample in samples):
        return dict.fromkeys(quantiles)
    values = np.concatenate([sample.values() for sample in samples]) if samples else np.empty(0)
    if not values.size:
        return dict.fromkeys(quantiles)
    return {
        name: float(values.mean()) if q is None else float(np.percentile(values, q))
        for name, q in quantiles.items()
    }


def summarize_many(run: ManySimulation) -> dict[str, Any]:
    scenario = run.scenario
    revisions = []
    for spec, sim, placement in zip(scenario.revisions, run.revisions, run.placements, strict=True):
        one = summarize(sim)
        pending = placement.pending if placement is not None else None
        revisions.append(
            {
                "name": spec.name,
                **{key: one[key] for key in _PER_REVISION},
                "pending": {
                    "pods": pending.pods if pending else 0,
                    "pod_seconds": pending.seconds if pending else 0.0,
                    "max_wait": pending.max_wait if pending else 0.0,
                },
            }
        )
    totals: dict[str, Any] = {key: sum(r[key] for r in revisions) for key in _SUMMED}
    lo, hi = scenario.warmup, scenario.duration
    totals["latency"] = _pooled(
        [sim.counters.latencies for sim in run.revisions], {"mean": None, "p50": 50, "p95": 95, "p99": 99}
    )
    totals["wait"] = _pooled([sim.counters.waits for sim in run.revisions], {"mean": None, "p95": 95})
    totals["ready_pods"] = ready_pod_stats(
        [life for sim in run.revisions for life in sim.fleet.lives()], lo, hi
    )
    totals["pending"] = {
        "pods": sum(r["pending"]["pods"] for r in revisions),
        "pod_seconds": sum(r["pending"]["pod_seconds"] for r in revisions),
        "max_wait": max((r["pending"]["max_wait"] for r in revisions), default=0.0),
    }
    arrivals = run.arrivals
    return {
        "revisions": revisions,
        "totals": totals,
        "revision_count": len(revisions),
        "nodes": None if scenario.nodes is None else len(scenario.nodes),
        "simulated_seconds": scenario.duration,
        "warmup": scenario.warmup,
        "seed": run.seed,
        "wall_seconds": run.wall_seconds,
        "drain_seconds": run.drain_seconds,
        "requests_per_wall_second": arrivals / run.wall_seconds if run.wall_seconds else None,
        "revision_seconds_ticked": run.revision_ticks,
    }


def _seconds(value: float | None) -> str:
    return "—" if value is None else f"{value:.3g}"


def many_table(report: dict[str, Any], top: int = 10) -> Table:
    """The ``top`` revisions by requests, then the totals."""
    table = Table(title=f"{report['revision_count']} revisions — top {top} by requests", title_justify="left")
    for name in (
        "revision",
        "requests",
        "503",
        "504",
        "cold",
        "p50 s",
        "p99 s",
        "pod-s",
        "pending pods (pod-s)",
    ):
        table.add_column(name, justify="left" if name == "revision" else "right")

    def add(name: str, row: dict[str, Any], **style: Any) -> None:
        latency = row["latency"]
        table.add_row(
            name,
            f"{row['requests']:,}",
            f"{row['rejected']:,}",
            f"{row['timed_out']:,}",
            f"{row['cold_start_requests']:,}",
            _seconds(latency["p50"]),
            _seconds(latency["p99"]),
            f"{row['pod_seconds']:,.0f}",
            f"{row['pending']['pods']:,} ({row['pending']['pod_seconds']:,.0f})",
            **style,
        )

    ranked = sorted(report["revisions"], key=lambda r: -r["requests"])
    for row in ranked[:top]:
        add(row["name"], row)
    add("total", report["totals"], style="bold", end_section=True)
    return table


class TotalsWriter:
    """A :class:`ManySimulation` timeline sink: each totals row goes to timeline.csv when complete;
    at most ``plot_rows`` rows are kept for the plot (every 2nd, 4th, ... second of a long run)."""

    def __init__(self, path: Path, plot_rows: int = PLOT_ROWS) -> None:
        self._handle = path.open("w", newline="")
        self._writer = csv.writer(self._handle)
        self._writer.writerow(TOTAL_COLUMNS)
        self._limit = plot_rows
        self.kept: list[TotalRow] = []
        self.stride = 1

    def __call__(self, row: TotalRow) -> None:
        self._writer.writerow(astuple(row))
        if self._limit and row.second % self.stride == 0:
            self.kept.append(row)
            if len(self.kept) > self._limit:
                self.kept = self.kept[::2]
                self.stride *= 2

    def __enter__(self) -> TotalsWriter:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self._handle.close()


def plot_totals(rows: list[TotalRow], report: dict[str, Any], path: Path, title: str, top: int = 15) -> None:
    """Pods of all revisions over time (ready, starting, pending), requests per second, and the
    pod-seconds of the top revisions."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    seconds = [r.second for r in rows]
    fig, (pods, traffic, cost) = plt.subplots(
        3, 1, figsize=(11, 10), gridspec_kw={"height_ratios": [3, 2, 2]}
    )
    fig.suptitle(title, fontsize=11)
    ready = np.array([r.ready_pods for r in rows])
    starting = np.array([r.starting_pods - r.pending_pods for r in rows])
    pending = np.array([r.pending_pods for r in rows])
    pods.stackplot(
        seconds, ready, starting, pending, step="post", labels=["ready", "starting", "pending (no room)"],
        colors=["tab:blue", "tab:orange", "tab:red"], alpha=0.6,
    )  # fmt: skip
    pods.plot(seconds, [r.awake_revisions for r in rows], color="0.3", lw=0.6, label="revisions awake")
    pods.set_ylabel("pods (all revisions)")
    pods.legend(loc="upper left", fontsize=8)
    traffic.plot(seconds, [r.arrivals for r in rows], label="arrivals", color="tab:blue", lw=0.6)
    failures = [r.rejections + r.timeouts for r in rows]
    if any(failures):
        traffic.plot(seconds, failures, label="503 + 504", color="tab:red", lw=0.8)
    traffic.set_ylabel("requests / s")
    traffic.set_xlabel("simulated seconds")
    traffic.legend(loc="upper left", fontsize=8)
    ranked = sorted(report["revisions"], key=lambda r: -r["pod_seconds"])[:top]
    cost.barh([r["name"] for r in ranked][::-1], [r["pod_seconds"] for r in ranked][::-1], color="tab:purple")
    cost.set_xlabel(f"pod-seconds (top {len(ranked)} revisions)")
    cost.tick_params(axis="y", labelsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
