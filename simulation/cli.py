"""``kpa simulate SCENARIO.yaml --out DIR [--seed N]``: one scenario, its report, timeline and plot."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from simulation.engine import Simulation
from simulation.plots import plot_timeline
from simulation.report import summarize, timeline_rows, write_report, write_timeline
from simulation.scenario import Scenario, ScenarioError, load_scenario


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("scenario", type=Path, help="scenario YAML (format: docs/simulation.md)")
    parser.add_argument("--out", type=Path, required=True, help="directory for report.json, timeline.csv/png")
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: the scenario's seed)")
    parser.add_argument("--no-plot", action="store_true", help="skip timeline.png")


def simulate(
    scenario: Scenario,
    out: Path,
    seed: int | None = None,
    *,
    plot: bool = True,
    console: Console | None = None,
) -> dict[str, Any]:
    """Run ``scenario`` and write its three files to ``out``; returns the report."""
    out.mkdir(parents=True, exist_ok=True)
    sim = Simulation(scenario, seed)
    if console is None:
        sim.run()
    else:
        with Progress(
            TextColumn("[bold]simulating"),
            BarColumn(),
            TextColumn("{task.completed:,.0f}/{task.total:,.0f} simulated s"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
            transient=True,
        ) as progress:
            task = progress.add_task("simulate", total=scenario.duration)
            sim.run(progress=lambda now: progress.update(task, completed=now))
    report = summarize(sim)
    write_report(report, out / "report.json")
    write_timeline(sim, out / "timeline.csv")
    if plot:
        title = f"{scenario.source or 'scenario'} — seed {sim.seed}"
        plot_timeline(timeline_rows(sim), out / "timeline.png", title)
    return report


def figure(value: Any, unit: str = "") -> str:
    """A report figure for people: four significant digits, whole thousands, "—" for none."""
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:,.0f}{unit}" if abs(value) >= 1000 else f"{value:.4g}{unit}"
    if isinstance(value, int):
        return f"{value:,}{unit}"
    return f"{value}{unit}"


def report_table(report: dict[str, Any]) -> Table:
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()
    latency, wait = report["latency"], report["wait"]
    table.add_row(
        "requests",
        f"{report['requests']:,} ({report['completed']:,} completed, "
        f"{report['rejected']:,} rejected 503, {report['timed_out']:,} timed out 504)",
    )
    table.add_row(
        "latency",
        f"mean {figure(latency['mean'], ' s')}, p50 {figure(latency['p50'], ' s')}, "
        f"p95 {figure(latency['p95'], ' s')}, p99 {figure(latency['p99'], ' s')}",
    )
    table.add_row("wait", f"mean {figure(wait['mean'], ' s')}, p95 {figure(wait['p95'], ' s')}")
    table.add_row("cold-start requests", figure(report["cold_start_requests"]))
    table.add_row(
        "pods",
        f"{figure(report['pod_seconds'])} pod-seconds, ready mean "
        f"{figure(report['ready_pods']['mean'])}, max {figure(report['ready_pods']['max'])}, "
        f"{report['scale_events']} scale events",
    )
    table.add_row(
        "run",
        f"{figure(report['simulated_seconds'])} simulated s in {report['wall_seconds']:.2f} wall s "
        f"({figure(report['requests_per_wall_second'])} requests / wall s)",
    )
    return table


def load_or_explain(path: Path, command: str, console: Console) -> Scenario | None:
    """The scenario at ``path``, or None after printing why it cannot run (the caller exits 2)."""
    try:
        return load_scenario(path)
    except ScenarioError as exc:
        console.print(f"[red]kpa {command}: {path}: {exc}[/red]")
        return None


def run(args: argparse.Namespace) -> int:
    console = Console(stderr=True)
    scenario = load_or_explain(args.scenario, "simulate", console)
    if scenario is None:
        return 2
    report = simulate(scenario, args.out, args.seed, plot=not args.no_plot, console=console)
    Console(file=sys.stdout).print(report_table(report))
    files = "report.json, timeline.csv" + ("" if args.no_plot else ", timeline.png")
    console.print(f"wrote {files} to {args.out}")
    return 0
