"""``kpa simulate``'s entry: a many-revision scenario (``revisions:`` or ``functions:``) runs here —
report.json with every revision and the totals, timeline.csv of the totals, timeline.png, and a table
of the top revisions — and a one-revision scenario goes on to :mod:`simulation.cli` unchanged.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from rich.console import Console

from simulation import cli
from simulation.cli import explain, progress_console, simulation_progress
from simulation.many import ManySimulation
from simulation.many_report import TotalsWriter, many_table, plot_totals, summarize_many
from simulation.many_scenario import ManyScenario, is_many, load_many
from simulation.report import PLOT_ROWS, write_report
from simulation.scenario import ScenarioError, read_document

configure = cli.configure  # the same options for both


def run(args: argparse.Namespace) -> int:
    """``kpa simulate``: many revisions here, one revision by simulation.cli."""
    return run_many(args) if many_requested(args.scenario) else cli.run(args)


def many_requested(path: Path) -> bool:
    """Whether the file is a many-revision scenario (unreadable ones are left to the usual errors)."""
    try:
        return is_many(read_document(path))
    except ScenarioError:
        return False


def simulate_many(
    scenario: ManyScenario,
    out: Path,
    seed: int | None = None,
    *,
    plot: bool = True,
    console: Console | None = None,
) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    with TotalsWriter(out / "timeline.csv", PLOT_ROWS if plot else 0) as timeline:
        run = ManySimulation(scenario, seed, timeline=timeline)
        if console is None:
            run.run()
        else:
            with simulation_progress(console) as progress:
                task = progress.add_task("simulate", total=run.duration, rate="")

                def update(now: float) -> None:
                    elapsed = progress.tasks[task].elapsed or 0.0
                    rate = f"{run.arrivals / elapsed:,.0f} req/s" if elapsed > 0 else ""
                    progress.update(task, completed=now, rate=rate)

                run.run(progress=update)
    report = summarize_many(run)
    write_report(report, out / "report.json")
    if plot:
        title = f"{scenario.source or 'scenario'} — {len(scenario.revisions)} revisions, seed {run.seed}"
        if timeline.stride > 1:
            title += f" (every {timeline.stride} s shown)"
        plot_totals(timeline.kept, report, out / "timeline.png", title)
    return report


def run_many(args: argparse.Namespace) -> int:
    console = Console(stderr=True)
    try:
        scenario = load_many(args.scenario)
        report = simulate_many(
            scenario, args.out, args.seed, plot=not args.no_plot, console=progress_console(args)
        )
    except ScenarioError as exc:
        explain(exc, args.scenario, "simulate", console)
        return 2
    out = Console(file=sys.stdout, width=None if sys.stdout.isatty() else 120)  # a pipe: wide enough
    out.print(many_table(report))
    out.print(
        f"{report['simulated_seconds']:,.0f} simulated s in {report['wall_seconds']:.1f} wall s "
        f"({report['requests_per_wall_second'] or 0:,.0f} requests / wall s)"
    )
    files = "report.json, timeline.csv" + ("" if args.no_plot else ", timeline.png")
    console.print(f"wrote {files} to {args.out}")
    return 0
