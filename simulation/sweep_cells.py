"""One grid point of ``kpa sweep``, as it runs wherever it is sent: a local process or a Dask worker.

Nothing a cell computes depends on where it runs, so a sweep gives the same figures locally and on a
cluster for the same seeds:

* the scenario arrives parsed, with the content of its data files (``empirical`` values, trace
  rows) already in it: no path is opened on the worker, whose disk may not have the file;
* every random draw comes from the seed (the simulation's own generators; no process-global state);
* the files are written to a private temporary directory and handed back as bytes, which the
  submitting process writes under its ``--out``; no cwd or output path of the worker is used.

Only the wall-clock figures (``wall_seconds``, ``requests_per_wall_second``) differ from run to run,
anywhere.
"""

from __future__ import annotations

import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from simulation.cli import simulate
from simulation.scenario import Scenario

# A Dask worker started with several threads runs cells in threads of one process. The simulation is
# pure Python (the GIL lets one thread run it at a time anyway) and pyplot is not thread-safe, so the
# cells of one process take turns; `dask worker --nworkers N --nthreads 1` runs N at once.
_ONE_AT_A_TIME = threading.Lock()


@dataclass(frozen=True)
class CellOutput:
    """What a cell hands back: its report and its files (report.json, timeline.csv[, timeline.png])."""

    report: dict[str, Any]
    files: dict[str, bytes]


def run_cell(scenario: Scenario, seed: int | None, plot: bool) -> CellOutput:
    """Simulate ``scenario`` in a temporary directory of this process and return what it wrote."""
    with _ONE_AT_A_TIME, tempfile.TemporaryDirectory(prefix="kpa-sweep-cell-") as tmp:
        report = simulate(scenario, Path(tmp), seed, plot=plot)
        files = {path.name: path.read_bytes() for path in sorted(Path(tmp).iterdir())}
    return CellOutput(report, files)


def summary_row(overrides: dict[str, Any], report: dict[str, Any]) -> dict[str, Any]:
    """A cell's line of sweep.csv: its grid values, then the report's figures."""
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
