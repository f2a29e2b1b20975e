"""``kpa simulate SCENARIO.yaml --out DIR [--seed N]``: one scenario, its report, timeline and plot.

The timeline is written to timeline.csv while the run goes, so a long run's memory stays flat; a
progress bar (simulated seconds done, requests per wall second) is shown on a terminal, or with
``--progress``, never into a pipe or a test's captured output.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from autoscaler.policy import PolicyError
from simulation.engine import Simulation
from simulation.plots import plot_timeline
from simulation.report import PLOT_ROWS, TimelineWriter, summarize, write_report
from simulation.scenario import Scenario, ScenarioError, load_scenario


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("scenario", type=Path, help="scenario YAML (format: docs/simulation.md)")
    parser.add_argument("--out", type=Path, required=True, help="directory for report.json, timeline.csv/png")
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: the scenario's seed)")
    parser.add_argument("--no-plot", action="store_true", help="skip timeline.png")
    add_progress_option(parser)


def add_progress_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="show a progress bar on stderr (default: only when stderr is a terminal)",
    )


def progress_console(args: argparse.Namespace) -> Console | None:
    """Where to draw progress bars: stderr when it is a terminal or ``--progress`` asked; else nowhere."""
    wanted = sys.stderr.isatty() if args.progress is None else args.progress
    return Console(stderr=True, force_terminal=args.progress or None) if wanted else None


def simulation_progress(console: Console) -> Progress:
    """A bar of simulated seconds done, with the requests simulated per wall second."""
    return Progress(
        TextColumn("[bold]simulating"),
        BarColumn(),
        TextColumn("{task.completed:,.0f}/{task.total:,.0f} simulated s"),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    )


def run_with_progress(sim: Simulation, console: Console | None) -> Simulation:
    """``sim.run()``, drawing :func:`simulation_progress` on ``console`` when there is one."""
    if console is None:
        return sim.run()
    with simulation_progress(console) as progress:
        task = progress.add_task("simulate", total=sim.duration, rate="")

        def update(now: float) -> None:
            elapsed = progress.tasks[task].elapsed or 0.0
            rate = f"{sim.arrivals / elapsed:,.0f} req/s" if elapsed > 0 else ""
            progress.update(task, completed=now, rate=rate)

        return sim.run(progress=update)


def simulate(
    scenario: Scenario,
    out: Path,
    seed: int | None = None,
    *,
    plot: bool = True,
    console: Console | None = None,
) -> dict[str, Any]:
    """Run ``scenario`` and write its three files to ``out``; returns the report.

    timeline.csv is written while the run goes (memory does not grow with the duration); a progress
    bar is drawn on ``console`` if given.
    """
    out.mkdir(parents=True, exist_ok=True)
    with TimelineWriter(out / "timeline.csv", PLOT_ROWS if plot else 0) as timeline:
        sim = run_with_progress(Simulation(scenario, seed, timeline=timeline), console)
    report = summarize(sim)
    write_report(report, out / "report.json")
    if plot:
        title = f"{scenario.source or 'scenario'} — seed {sim.seed}"
        if timeline.stride > 1:
            title += f" (every {timeline.stride} s shown)"
        plot_timeline(timeline.plot_rows(), out / "timeline.png", title)
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
    if "models" in report:
        models, load = report["models"], report["models"]["load_wait"]
        table.add_row(
            "models",
            f"hit ratio {figure(models['hit_ratio'])} "
            f"({models['hits']:,} hits, {models['misses']:,} misses), "
            f"{models['loads']:,} loads, {models['evictions']:,} evictions; load wait p50 "
            f"{figure(load['p50'], ' s')}, p95 {figure(load['p95'], ' s')}, p99 {figure(load['p99'], ' s')}",
        )
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


def explain(error: ScenarioError, path: Path, command: str, console: Console) -> None:
    """Print why the scenario cannot run: ``kpa CMD: FILE:LINE:COLUMN: key.path=value: reason``."""
    console.print(
        f"kpa {command}: {error.located(path)}", style="red", markup=False, highlight=False, soft_wrap=True
    )


def load_or_explain(path: Path, command: str, console: Console) -> Scenario | None:
    """The scenario at ``path``, or None after printing why it cannot run (the caller exits 2)."""
    try:
        return load_scenario(path)
    except ScenarioError as exc:
        explain(exc, path, command, console)
        return None


def run(args: argparse.Namespace) -> int:
    console = Console(stderr=True)
    scenario = load_or_explain(args.scenario, "simulate", console)
    if scenario is None:
        return 2
    try:
        report = simulate(
            scenario, args.out, args.seed, plot=not args.no_plot, console=progress_console(args)
        )
    except ScenarioError as exc:  # a bound met during the run (e.g. more pods than one simulation holds)
        explain(exc, args.scenario, "simulate", console)
        return 2
    except PolicyError as exc:  # the scenario's policy failed or answered garbage
        console.print(
            f"kpa simulate: {args.scenario}: {exc}",
            style="red",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
        return 2
    Console(file=sys.stdout).print(report_table(report))
    files = "report.json, timeline.csv" + ("" if args.no_plot else ", timeline.png")
    console.print(f"wrote {files} to {args.out}")
    return 0
