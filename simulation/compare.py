"""``kpa compare SCENARIO --policy kpa --policy hpa --policy keda-http --out DIR``: policies side by side.

Each ``--policy`` runs the scenario once with that policy in place of the scenario's own (``kpa``,
``hpa``, ``keda-http``, ``module:Class`` or ``path/file.py:Class``), on the same seed. The engine draws
arrivals, service times and start-up times from separate random streams (``random_streams``), a service
time as each request arrives, so every policy sees the same requests with the same service times; what
a policy changes is only which pod serves a request and when.

Written to DIR: ``compare.json`` — one object per policy, keyed by the ``--policy`` value as given,
holding report.json's fields plus ``time_at_zero`` (seconds after the warm-up with no pod at all) —
``compare.png`` (ready pods over time per policy; pod-seconds against p99 latency), and the table
printed on stdout.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from autoscaler.policy import PolicyError
from simulation.cli import add_progress_option, explain, figure, progress_console
from simulation.engine import Simulation, TimelineRow
from simulation.fleet import PodLife
from simulation.report import summarize
from simulation.scenario import Scenario, ScenarioError, load_scenario

PLOT_POINTS = 4000  # points per policy's pods-over-time line; a longer run is shown every n-th second


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("scenario", type=Path, help="scenario YAML (format: docs/simulation.md)")
    parser.add_argument(
        "--policy",
        action="append",
        required=True,
        help="a policy to run (repeat): kpa, hpa, keda-http, module:Class or path/to/file.py:Class",
    )
    parser.add_argument("--out", type=Path, required=True, help="directory for compare.json and compare.png")
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: the scenario's seed)")
    add_progress_option(parser)


def time_at_zero(pods: Iterable[PodLife], lo: float, hi: float) -> float:
    """Seconds within ``[lo, hi]`` when the revision had no pod at all (none starting, ready or draining)."""
    spans = sorted((max(p.created, lo), min(p.gone_at if p.gone_at is not None else hi, hi)) for p in pods)
    covered, reach = 0.0, lo
    for start, end in spans:
        if end <= reach:
            continue
        covered += end - max(start, reach)
        reach = end
    return (hi - lo) - covered


class _ReadyPods:
    """A timeline sink keeping (second, ready pods) for the plot, every ``stride``-th second."""

    def __init__(self, stride: int) -> None:
        self.stride = stride
        self.points: list[tuple[int, int]] = []

    def __call__(self, row: TimelineRow) -> None:
        if row.second % self.stride == 0:
            self.points.append((row.second, row.ready_pods))


def run_policy(
    scenario: Scenario, seed: int | None, progress: Progress | None, label: str
) -> tuple[dict, list]:
    """One policy's run: its report (report.json's fields plus ``time_at_zero``) and its pod line."""
    sink = _ReadyPods(max(1, int(scenario.duration) // PLOT_POINTS))
    sim = Simulation(scenario, seed, timeline=sink)
    if progress is None:
        sim.run()
    else:
        task = progress.add_task(label, total=scenario.duration)
        sim.run(progress=lambda now: progress.update(task, completed=now))
    report = summarize(sim)
    report["policy"] = label
    report["time_at_zero"] = time_at_zero(sim.fleet.lives(), scenario.warmup, scenario.duration)
    return report, sink.points


def compare(
    path: Path, policies: list[str], out: Path, seed: int | None = None, console: Console | None = None
) -> dict[str, dict[str, Any]]:
    """Run each policy on the scenario at ``path``; write compare.json and compare.png to ``out``.

    Raises :class:`ScenarioError` for a scenario or policy that cannot run (the policy's key path
    ``policy`` names which).
    """
    scenarios = {label: load_scenario(path, {"policy": label}) for label in dict.fromkeys(policies)}
    out.mkdir(parents=True, exist_ok=True)
    reports: dict[str, dict[str, Any]] = {}
    lines: dict[str, list[tuple[int, int]]] = {}
    bar = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed:,.0f}/{task.total:,.0f} simulated s"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
        disable=console is None,
    )
    with bar:
        for label, scenario in scenarios.items():
            reports[label], lines[label] = run_policy(scenario, seed, bar if console else None, label)
    (out / "compare.json").write_text(json.dumps(reports, indent=2) + "\n")
    plot_compare(
        reports, lines, out / "compare.png", f"{path.name} — seed {next(iter(reports.values()))['seed']}"
    )
    return reports


def compare_table(reports: dict[str, dict[str, Any]]) -> Table:
    """Policies as columns, the figures a choice rests on as rows."""
    table = Table(title="policies on the same arrivals", title_justify="left")
    table.add_column("", style="bold")
    for label in reports:
        table.add_column(label, justify="right", overflow="fold")
    rows: list[tuple[str, Any]] = [
        ("requests", lambda r: figure(r["requests"])),
        ("latency p50", lambda r: figure(r["latency"]["p50"], " s")),
        ("latency p95", lambda r: figure(r["latency"]["p95"], " s")),
        ("latency p99", lambda r: figure(r["latency"]["p99"], " s")),
        ("503 rejected", lambda r: figure(r["rejected"])),
        ("504 timed out", lambda r: figure(r["timed_out"])),
        ("cold-start requests", lambda r: figure(r["cold_start_requests"])),
        ("pod-seconds (cost)", lambda r: figure(r["pod_seconds"])),
        (
            "ready pods mean / max",
            lambda r: f"{figure(r['ready_pods']['mean'])} / {figure(r['ready_pods']['max'])}",
        ),
        ("time at zero", lambda r: figure(r["time_at_zero"], " s")),
        ("scale events", lambda r: figure(r["scale_events"])),
    ]
    for name, cell in rows:
        table.add_row(name, *(cell(r) for r in reports.values()))
    return table


def plot_compare(
    reports: dict[str, dict[str, Any]], lines: dict[str, list[tuple[int, int]]], path: Path, title: str
) -> None:
    """Ready pods over time per policy (top) and pod-seconds against p99 latency (bottom)."""
    fig, (pods, cost) = plt.subplots(2, 1, figsize=(11, 8), gridspec_kw={"height_ratios": [3, 2]})
    fig.suptitle(title, fontsize=11)
    for label, points in lines.items():
        pods.step([s for s, _ in points], [n for _, n in points], where="post", label=label, lw=1)
    pods.set_xlabel("simulated seconds")
    pods.set_ylabel("ready pods")
    pods.legend(loc="upper right", fontsize=8)
    for label, report in reports.items():
        p99 = report["latency"]["p99"]
        if p99 is not None:
            cost.scatter(report["pod_seconds"], p99, s=40)
            cost.annotate(
                label, (report["pod_seconds"], p99), textcoords="offset points", xytext=(6, 4), fontsize=8
            )
    cost.set_xlabel("pod-seconds (cost)")
    cost.set_ylabel("p99 latency (s)")
    cost.set_yscale("log")
    cost.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run(args: argparse.Namespace) -> int:
    console = Console(stderr=True)
    try:
        reports = compare(args.scenario, args.policy, args.out, args.seed, progress_console(args))
    except ScenarioError as exc:
        explain(exc, args.scenario, "compare", console)
        return 2
    except PolicyError as exc:  # a policy that failed during its run
        console.print(
            f"kpa compare: {args.scenario}: {exc}", style="red", markup=False, highlight=False, soft_wrap=True
        )
        return 2
    Console(file=sys.stdout, width=max(100, 24 + 18 * len(reports))).print(compare_table(reports))
    console.print(f"wrote compare.json, compare.png to {args.out}")
    return 0
