"""``kpa sweep SCENARIO.yaml --grid key.path=v1,v2 [--grid ...] --out DIR [--jobs N]``.

Every combination of the grid values is a scenario of its own, simulated in a pool of processes with
the same seed (so cells differ only by the knobs, not by their luck). Writes ``sweep.csv``, one
``cells/NNN/`` directory per cell (report.json, timeline.csv) and ``cost_vs_p99.png``.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import math
import multiprocessing
import os
import sys
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import yaml
from rich import box
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from simulation.cli import add_progress_option, explain, figure, progress_console, simulate
from simulation.limits import MAX_SWEEP_CELLS
from simulation.plots import plot_cost_vs_p99
from simulation.scenario import ScenarioError, load_scenario

COLUMNS = (
    "requests",
    "completed",
    "rejected",
    "timed_out",
    "mean",
    "p50",
    "p95",
    "p99",
    "wait_mean",
    "cold_start_requests",
    "pod_seconds",
    "ready_mean",
    "ready_max",
    "scale_events",
    "wall_seconds",
)


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("scenario", type=Path, help="scenario YAML (format: docs/simulation.md)")
    parser.add_argument(
        "--grid",
        action="append",
        required=True,
        metavar="KEY.PATH=V1,V2,...",
        help="a scenario key and its values, e.g. revision.annotations.autoscaling.knative.dev/target=5,10",
    )
    parser.add_argument("--out", type=Path, required=True, help="output directory")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="parallel processes")
    parser.add_argument(
        "--seed", type=int, default=None, help="seed for every cell (default: the scenario's)"
    )
    parser.add_argument("--plots", action="store_true", help="also write each cell's timeline.png")
    add_progress_option(parser)


def parse_grid(specs: list[str]) -> list[tuple[str, list[Any]]]:
    """``key=1,2,3`` → ``("key", [1, 2, 3])``; each value is read as YAML (numbers, strings, booleans)."""
    grid: list[tuple[str, list[Any]]] = []
    for spec in specs:
        key, sep, values = spec.partition("=")
        if not sep or not key or not values:
            raise ScenarioError(f"--grid {spec!r}: expected KEY.PATH=V1,V2,...")
        if any(key == seen for seen, _ in grid):
            raise ScenarioError(f"--grid {key}: given twice")
        grid.append((key, [yaml.safe_load(v) if v.strip() else "" for v in values.split(",")]))
    return grid


def cells(grid: list[tuple[str, list[Any]]]) -> list[dict[str, Any]]:
    """Every combination of the grid's values; more than :data:`MAX_SWEEP_CELLS` is refused unbuilt."""
    sizes = [len(values) for _, values in grid]
    if math.prod(sizes) > MAX_SWEEP_CELLS:
        product = " x ".join(f"{size:,}" for size in sizes)
        raise ScenarioError(
            f"--grid: {math.prod(sizes):,} cells ({product}), above the {MAX_SWEEP_CELLS:,}-cell limit of "
            "one sweep; give fewer values or split the sweep"
        )
    keys = [key for key, _ in grid]
    return [
        dict(zip(keys, combo, strict=True)) for combo in itertools.product(*(values for _, values in grid))
    ]


def label(overrides: dict[str, Any]) -> str:
    return ", ".join(
        f"{key.rsplit('/', 1)[-1].rsplit('.', 1)[-1]}={value}" for key, value in overrides.items()
    )


def _run_cell(
    path: Path, overrides: dict[str, Any], seed: int | None, out: Path, plot: bool
) -> dict[str, Any]:
    scenario = load_scenario(path, overrides)
    report = simulate(scenario, out, seed, plot=plot)
    latency = report["latency"]
    return {
        **overrides,
        "requests": report["requests"],
        "completed": report["completed"],
        "rejected": report["rejected"],
        "timed_out": report["timed_out"],
        "mean": latency["mean"],
        "p50": latency["p50"],
        "p95": latency["p95"],
        "p99": latency["p99"],
        "wait_mean": report["wait"]["mean"],
        "cold_start_requests": report["cold_start_requests"],
        "pod_seconds": report["pod_seconds"],
        "ready_mean": report["ready_pods"]["mean"],
        "ready_max": report["ready_pods"]["max"],
        "scale_events": report["scale_events"],
        "wall_seconds": report["wall_seconds"],
    }


# Report figures in the printed table, with short headers so a grid still fits 80 columns.
SUMMARY_COLUMNS = (
    ("requests", "requests"),
    ("rejected", "503"),
    ("timed_out", "504"),
    ("p50", "p50 s"),
    ("p99", "p99 s"),
    ("pod_seconds", "pod-s"),
    ("ready_mean", "ready"),
)


def run(args: argparse.Namespace) -> int:
    console = Console(stderr=True)
    try:
        grid = parse_grid(args.grid)
        todo = cells(grid)
        for overrides in todo:  # reject a bad cell before any work starts
            load_scenario(args.scenario, overrides)
    except ScenarioError as exc:
        explain(exc, args.scenario, "sweep", console)
        return 2
    if args.jobs < 1:
        console.print("[red]kpa sweep: --jobs must be >= 1[/red]")
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    results: list[dict[str, Any] | None] = [None] * len(todo)
    jobs = min(args.jobs, len(todo))
    with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {
            pool.submit(
                _run_cell, args.scenario, overrides, args.seed, args.out / "cells" / f"{i:03d}", args.plots
            ): i
            for i, overrides in enumerate(todo)
        }
        shown = progress_console(args)
        with Progress(
            TextColumn("[bold]sweeping"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"),
            TimeElapsedColumn(),
            console=shown or Console(quiet=True),
            disable=shown is None,
        ) as progress:
            task = progress.add_task("cells", total=len(todo), rate="")
            requests = 0
            try:
                for future in as_completed(futures):
                    row = results[futures[future]] = future.result()
                    requests += row["requests"]
                    elapsed = progress.tasks[task].elapsed or 0.0
                    rate = f"{requests / elapsed:,.0f} simulated req/s" if elapsed > 0 else ""
                    progress.update(task, advance=1, rate=rate)
            except ScenarioError as exc:  # a bound met during a cell's run
                for pending in futures:
                    pending.cancel()
                explain(exc, args.scenario, "sweep", console)
                return 2
    done = [r for r in results if r is not None]
    keys = [key for key, _ in grid]
    with (args.out / "sweep.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["cell", *keys, *COLUMNS])
        writer.writeheader()
        for i, row in enumerate(done):
            writer.writerow({"cell": f"{i:03d}", **row})
    table = Table(title=f"{args.scenario.name}: {len(done)} cells", box=box.SIMPLE_HEAD)
    table.add_column("cell", justify="right", no_wrap=True)
    for key in keys:  # the knob's own name; the full path is in sweep.csv
        table.add_column(key.rsplit("/", 1)[-1].rsplit(".", 1)[-1], justify="right", overflow="fold")
    for _, header in SUMMARY_COLUMNS:
        table.add_column(header, justify="right", no_wrap=True)
    for i, row in enumerate(done):
        table.add_row(
            f"{i:03d}", *(figure(row[k]) for k in keys), *(figure(row[k]) for k, _ in SUMMARY_COLUMNS)
        )
    # A terminal sets its own width; into a file or pipe the table is printed whole, not squeezed to 80.
    Console(width=None if sys.stdout.isatty() else 200).print(table)
    plot_cost_vs_p99(
        [
            {"label": label({k: row[k] for k in keys}), "pod_seconds": row["pod_seconds"], "p99": row["p99"]}
            for row in done
        ],
        args.out / "cost_vs_p99.png",
        f"{args.scenario.name}: cost vs p99 latency",
    )
    console.print(f"wrote sweep.csv, cost_vs_p99.png and cells/ to {args.out}")
    return 0
