"""The Azure Functions 2019 trace's per-function files, as a many-revision scenario reads them.

* ``*_inv.csv`` (per-minute invocations) is read by :func:`simulation.workloads.load_trace`; here only
  each function's app (second column), to find its memory.
* ``*_run.csv``: one line per function, execution time in ms — ``Average``, ``Minimum``,
  ``Maximum`` and the percentiles 0, 1, 25, 50, 75, 99, 100 of the per-interval averages. A function's
  service time is drawn from the piecewise-linear quantile function through those seven points (the
  trace gives nothing finer), kept as :data:`QUANTILE_POINTS` equally likely values of an
  :class:`~simulation.distributions.Empirical` distribution.
* ``*_mem.csv``: one line per app — ``AverageAllocatedMb`` and its percentiles. A pod's memory request
  is its app's ``AverageAllocatedMb`` (rounded up to a MiB): what a function typically holds, as one
  would size a request.

Errors give the line (and column), never the text: the files may be anything on the machine.
"""

from __future__ import annotations

import csv
import functools
import itertools
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from simulation.distributions import Empirical

QUANTILE_POINTS = 200  # values per function's service-time distribution (midpoints of 200 equal slices)
_RUN_COLUMNS = [f"percentile_Average_{p}" for p in (0, 1, 25, 50, 75, 99, 100)]
_RUN_LEVELS = np.array([0.0, 0.01, 0.25, 0.5, 0.75, 0.99, 1.0])
_MEMORY_COLUMN = "AverageAllocatedMb"


@dataclass(frozen=True)
class Durations:
    """Execution-time percentiles (seconds) by HashFunction."""

    by_function: dict[str, tuple[float, ...]]

    def service_time(self, function: str) -> Empirical | None:
        """The function's service-time distribution, or None when the file does not list it."""
        points = self.by_function.get(function)
        if points is None:
            return None
        levels = (np.arange(QUANTILE_POINTS) + 0.5) / QUANTILE_POINTS
        values = np.interp(levels, _RUN_LEVELS, np.array(points))
        return Empirical(tuple(float(v) for v in values), f"{function[:8]} percentiles")


def _rows(path: Path, wanted: list[str]) -> tuple[list[list[str]], list[int]]:
    """The data lines of a CSV file and the indexes of the ``wanted`` columns (named in the header)."""
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        try:
            header = next(reader, None)
            if header is None:
                raise ValueError("empty file: expected a header line")
            missing = [name for name in wanted if name not in header]
            if missing:
                raise ValueError(f"line 1: no column {missing[0]} in the header")
            return [row for row in reader if row], [header.index(name) for name in wanted]
        except csv.Error:
            raise ValueError(f"line {reader.line_num}: not CSV") from None


def _number(row: list[str], column: int, line: int) -> float:
    try:
        value = float(row[column])
    except (ValueError, IndexError):
        raise ValueError(f"line {line}, column {column + 1}: expected a number >= 0") from None
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"line {line}, column {column + 1}: expected a number >= 0")
    return value


@functools.lru_cache(maxsize=2)
def load_durations(path: Path) -> Durations:
    rows, columns = _rows(path, ["HashFunction", *_RUN_COLUMNS])
    name, *points = columns
    by_function = {}
    for line, row in enumerate(rows, start=2):
        values = [_number(row, column, line) / 1000.0 for column in points]
        if any(b < a for a, b in itertools.pairwise(values)):
            raise ValueError(f"line {line}: percentiles must not decrease")
        by_function[row[name]] = tuple(values)
    return Durations(by_function)


@functools.lru_cache(maxsize=2)
def load_memory(path: Path) -> dict[str, int]:
    """Memory (MiB, rounded up) by HashApp."""
    rows, (app, memory) = _rows(path, ["HashApp", _MEMORY_COLUMN])
    return {row[app]: math.ceil(_number(row, memory, line)) for line, row in enumerate(rows, start=2)}


@functools.lru_cache(maxsize=2)
def load_apps(path: Path) -> tuple[str, ...]:
    """Each function's HashApp (second column) of an ``*_inv.csv``, in the file's order."""
    rows, _ = _rows(path, [])
    return tuple(row[1] if len(row) > 1 else "" for row in rows)
