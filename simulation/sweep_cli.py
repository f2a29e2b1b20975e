"""``kpa sweep SCENARIO.yaml --grid key.path=v1,v2 [--grid ...] --out DIR [--jobs N | --scheduler ADDR]``.

Every combination of the grid values is a scenario of its own, simulated in a pool of local processes
or on a Dask cluster (``--scheduler``) with the same seed (so cells differ only by the knobs, not by
their luck, and a cluster gives the local figures). Writes ``sweep.csv``, one ``cells/NNN/`` directory
per cell (report.json, timeline.csv), and the Pareto view of cost against p99: the frontier marked in
the table, ``pareto.json`` and ``pareto.png``.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import csv
import itertools
import json
import math
import os
import sys
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import yaml
from rich import box
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from simulation.cli import add_progress_option, explain, figure, progress_console
from simulation.limits import MAX_SWEEP_CELLS
from simulation.pareto import comparable, frontier
from simulation.plots import plot_cost_vs_p99
from simulation.scenario import ScenarioError, load_scenario
from simulation.sweep_cells import CellOutput, run_cell, summary_row
from simulation.sweep_runners import Runner, SchedulerError, dask_runner, drive, local_runner

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
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="parallel local processes")
    parser.add_argument(
        "--scheduler",
        metavar="tcp://HOST:PORT",
        help="run the cells on this Dask scheduler's workers instead of local processes "
        "(docs/experiments.md, 'Sweeps on a cluster')",
    )
    parser.add_argument(
        "--connect-timeout",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="with --scheduler: fail when the scheduler or a first worker is not there by then (default 10)",
    )
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


def _runner(args: argparse.Namespace, cells: int) -> AbstractContextManager[Runner]:
    if args.scheduler:  # a worker-less cluster for longer than this ends the sweep rather than hang it
        return dask_runner(
            args.scheduler, args.connect_timeout, stall_timeout=max(60.0, args.connect_timeout)
        )
    return local_runner(min(args.jobs, cells))


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
    if args.jobs < 1 or args.connect_timeout <= 0:
        console.print("[red]kpa sweep: --jobs must be >= 1 and --connect-timeout > 0[/red]")
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    rows: dict[int, dict[str, Any]] = {}

    def submit(executor: cf.Executor, cell: int) -> cf.Future[CellOutput]:
        # Parsed here, shipped whole (data files' content included): a worker opens no path of ours.
        return executor.submit(run_cell, load_scenario(args.scenario, todo[cell]), args.seed, args.plots)

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
        requests = [0]  # simulated so far, for the rate

        def done(cell: int, output: CellOutput) -> None:
            directory = args.out / "cells" / f"{cell:03d}"
            directory.mkdir(parents=True, exist_ok=True)
            for name, content in output.files.items():
                (directory / name).write_bytes(content)
            rows[cell] = summary_row(todo[cell], output.report)
            requests[0] += rows[cell]["requests"]
            elapsed = progress.tasks[task].elapsed or 0.0
            rate = f"{requests[0] / elapsed:,.0f} simulated req/s" if elapsed > 0 else ""
            progress.update(task, advance=1, rate=rate)

        try:
            with _runner(args, len(todo)) as runner:
                failed = drive(runner, len(todo), submit, done)
        except ScenarioError as exc:  # a bound met during a cell's run
            explain(exc, args.scenario, "sweep", console)
            return 2
        except SchedulerError as exc:
            console.print(f"kpa sweep: {exc}", style="red", markup=False, highlight=False, soft_wrap=True)
            return 1
        except KeyboardInterrupt:
            console.print(
                f"kpa sweep: interrupted; unfinished cells cancelled, {len(rows)} written to {args.out}"
            )
            return 130
    _write_results(args, [key for key, _ in grid], rows, console)
    for cell, why in sorted(failed.items()):
        console.print(f"kpa sweep: cell {cell:03d} ({label(todo[cell])}) failed: {why}", markup=False)
    return 1 if failed else 0


def pareto_document(keys: list[str], rows: dict[int, dict[str, Any]], on: dict[int, bool]) -> dict[str, Any]:
    """pareto.json: the frontier's cells, cheapest first, with their grid values and figures."""
    figures = ("pod_seconds", "p99", "p50", "requests", "rejected", "timed_out")
    front = sorted((cell for cell, yes in on.items() if yes), key=lambda c: (rows[c]["pod_seconds"], c))
    return {
        "axes": ["pod_seconds", "p99"],
        "frontier": [
            {"cell": f"{c:03d}", "grid": {k: rows[c][k] for k in keys}, **{f: rows[c][f] for f in figures}}
            for c in front
        ],
        "without_p99": [
            f"{c:03d}" for c in sorted(rows) if not comparable(rows[c]["pod_seconds"], rows[c]["p99"])
        ],
    }


def _write_results(
    args: argparse.Namespace, keys: list[str], rows: dict[int, dict[str, Any]], console: Console
) -> None:
    """sweep.csv, the table (frontier marked), pareto.json and pareto.png, for the cells that finished."""
    order = sorted(rows)
    marks = frontier([(rows[c]["pod_seconds"], rows[c]["p99"]) for c in order])
    on = dict(zip(order, marks, strict=True))
    with (args.out / "sweep.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["cell", *keys, *COLUMNS])
        writer.writeheader()
        for cell in order:
            writer.writerow({"cell": f"{cell:03d}", **rows[cell]})
    table = Table(
        title=f"{args.scenario.name}: {len(order)} cells, * on the pod-seconds vs p99 frontier",
        box=box.SIMPLE_HEAD,
    )
    table.add_column("cell", justify="right", no_wrap=True)
    for key in keys:  # the knob's own name; the full path is in sweep.csv
        table.add_column(key.rsplit("/", 1)[-1].rsplit(".", 1)[-1], justify="right", overflow="fold")
    for _, header in SUMMARY_COLUMNS:
        table.add_column(header, justify="right", no_wrap=True)
    for cell in order:
        row = rows[cell]
        table.add_row(
            f"{'*' if on[cell] else ' '}{cell:03d}",
            *(figure(row[k]) for k in keys),
            *(figure(row[k]) for k, _ in SUMMARY_COLUMNS),
        )
    # A terminal sets its own width; into a file or pipe the table is printed whole, not squeezed to 80.
    Console(width=None if sys.stdout.isatty() else 200).print(table)
    (args.out / "pareto.json").write_text(json.dumps(pareto_document(keys, rows, on), indent=2) + "\n")
    plot_cost_vs_p99(
        [
            {
                "label": label({k: rows[c][k] for k in keys}),
                "pod_seconds": rows[c]["pod_seconds"],
                "p99": rows[c]["p99"],
            }
            for c in order
        ],
        args.out / "pareto.png",
        f"{args.scenario.name}: cost vs p99 latency, Pareto frontier in red",
        frontier=marks,
    )
    console.print(f"wrote sweep.csv, pareto.json, pareto.png and cells/ to {args.out}")
