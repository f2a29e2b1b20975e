"""Arrival processes: phases played one after another.

Every random phase is a Poisson process whose rate may vary in time. Arrivals are drawn in windows
of a few seconds with numpy (a Poisson count of candidates placed uniformly, thinned to the rate),
so the simulator's arrival handler only walks a list of floats. ``trace`` replays per-minute
invocation counts in the Azure Functions 2019 format (Shahrad et al., "Serverless in the Wild",
USENIX ATC'20): each minute's count is placed uniformly at random inside the minute, which is a
Poisson process conditioned on that count.
"""

from __future__ import annotations

import csv
import functools
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from simulation.schema import Node, ScenarioError, join, show
from simulation.yamldoc import Position, positions_of

TYPES = ("poisson", "constant", "step", "ramp", "burst", "sinusoid", "on_off", "trace")
_WINDOW = 10.0  # seconds of arrivals drawn per numpy call
# At most this many arrivals (or thinning candidates) per block, so a block's arrays stay at a few MB
# whatever the rate. A random phase draws half that on average (a Poisson count never reaches twice its
# mean of 500,000), so its window is cut shorter only above 50,000 req/s: below, draws are unchanged.
BLOCK_ARRIVALS = 1_000_000


class RatePhase:
    """A Poisson phase with rate ``rate(t)`` (t in seconds since the phase began) below ``peak``."""

    duration: float

    @property
    def peak(self) -> float:
        raise NotImplementedError

    def rate(self, t: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def expected_requests(self) -> float:
        grid = np.linspace(0.0, self.duration, 4001)
        return float(np.trapezoid(self.rate(grid), grid))

    def draws(self) -> float:
        """Candidates drawn by thinning (``peak`` × duration): the work of generating this phase."""
        return self.peak * self.duration

    def arrivals(self, rng: np.random.Generator) -> Iterator[np.ndarray]:
        peak = self.peak
        if peak <= 0:
            return
        window = min(_WINDOW, BLOCK_ARRIVALS / (2 * peak))
        start = 0.0
        while start < self.duration:
            end = min(start + window, self.duration)
            count = rng.poisson(peak * (end - start))
            times = np.sort(rng.uniform(start, end, count))
            if times.size:
                keep = rng.random(times.size) * peak < self.rate(times)
                yield times[keep]
            start = end


@dataclass(frozen=True)
class Poisson(RatePhase):
    rate_per_s: float
    duration: float

    @property
    def peak(self) -> float:
        return self.rate_per_s

    def rate(self, t: np.ndarray) -> np.ndarray:
        return np.full_like(t, self.rate_per_s)


@dataclass(frozen=True)
class Step(RatePhase):
    before: float
    after: float
    at: float
    duration: float

    @property
    def peak(self) -> float:
        return max(self.before, self.after)

    def rate(self, t: np.ndarray) -> np.ndarray:
        return np.where(t < self.at, self.before, self.after)


@dataclass(frozen=True)
class Ramp(RatePhase):
    start_rate: float
    end_rate: float
    duration: float

    @property
    def peak(self) -> float:
        return max(self.start_rate, self.end_rate)

    def rate(self, t: np.ndarray) -> np.ndarray:
        return self.start_rate + (self.end_rate - self.start_rate) * (t / self.duration)


@dataclass(frozen=True)
class Burst(RatePhase):
    """``base`` rate, raised to ``peak_rate`` for the first ``length`` seconds of every ``every``."""

    base: float
    peak_rate: float
    every: float
    length: float
    duration: float

    @property
    def peak(self) -> float:
        return max(self.base, self.peak_rate)

    def rate(self, t: np.ndarray) -> np.ndarray:
        return np.where(np.mod(t, self.every) < self.length, self.peak_rate, self.base)


@dataclass(frozen=True)
class Sinusoid(RatePhase):
    """``mean + amplitude·cos(2π(t − peak_at)/period)``, clipped at zero: a diurnal cycle by default."""

    mean: float
    amplitude: float
    period: float
    peak_at: float
    duration: float

    @property
    def peak(self) -> float:
        return self.mean + self.amplitude

    def rate(self, t: np.ndarray) -> np.ndarray:
        wave = np.cos(2 * np.pi * (t - self.peak_at) / self.period)
        return np.maximum(self.mean + self.amplitude * wave, 0.0)


@dataclass(frozen=True)
class OnOff(RatePhase):
    """Poisson at ``rate_per_s`` for ``on`` seconds, then silence for ``off`` seconds, repeated."""

    rate_per_s: float
    on: float
    off: float
    duration: float

    @property
    def peak(self) -> float:
        return self.rate_per_s

    def rate(self, t: np.ndarray) -> np.ndarray:
        return np.where(np.mod(t, self.on + self.off) < self.on, self.rate_per_s, 0.0)


@dataclass(frozen=True)
class Constant:
    """Evenly spaced arrivals, ``1/rate`` apart, the first at the start of the phase."""

    rate_per_s: float
    duration: float

    def expected_requests(self) -> float:
        return math.ceil(self.duration * self.rate_per_s) if self.rate_per_s > 0 else 0

    def draws(self) -> float:
        return self.expected_requests()

    def arrivals(self, rng: np.random.Generator) -> Iterator[np.ndarray]:
        if self.rate_per_s <= 0:
            return
        total = math.ceil(self.duration * self.rate_per_s - 1e-9)
        per_window = min(max(1, int(_WINDOW * self.rate_per_s)), BLOCK_ARRIVALS)
        for first in range(0, total, per_window):
            yield np.arange(first, min(first + per_window, total)) / self.rate_per_s


@dataclass(frozen=True)
class Trace:
    """Per-minute counts (already selected and summed), replayed from the first minute of the phase."""

    counts: tuple[int, ...]
    scale: float
    duration: float
    label: str

    def expected_requests(self) -> float:
        minutes = math.ceil(self.duration / 60)
        return float(sum(self.counts[:minutes])) * self.scale

    def draws(self) -> float:
        return self.expected_requests()

    def arrivals(self, rng: np.random.Generator) -> Iterator[np.ndarray]:
        for minute, count in enumerate(self.counts):
            start = minute * 60.0
            if start >= self.duration:
                return
            wanted = count * self.scale
            n = int(wanted) + int(rng.random() < wanted - int(wanted))
            if n > BLOCK_ARRIVALS:  # a huge minute: split it into equal slices, each drawn sorted
                slices = math.ceil(n / BLOCK_ARRIVALS)
                edges = start + 60.0 * np.arange(slices + 1) / slices
                for lo, hi, k in zip(
                    edges[:-1], edges[1:], rng.multinomial(n, [1 / slices] * slices), strict=True
                ):
                    times = np.sort(rng.uniform(lo, hi, k))
                    yield times[times < self.duration]
            elif n:
                times = np.sort(rng.uniform(start, start + 60.0, n))
                yield times[times < self.duration]


Phase = RatePhase | Constant | Trace


@dataclass(frozen=True)
class TraceTable:
    functions: tuple[str, ...]
    counts: np.ndarray  # (functions, minutes)

    def find(self, key: object, where: str, at: Position | None = None) -> int:
        """A row by index or by (a unique prefix of) its HashFunction; ``at`` places an error."""
        if isinstance(key, int) and not isinstance(key, bool):
            if 0 <= key < len(self.functions):
                return key
            raise ScenarioError(f"{where}={key}: row index out of range 0..{len(self.functions) - 1}", at)
        if not isinstance(key, str) or not key:
            raise ScenarioError(
                f"{where}={show(key)}: expected a HashFunction (or a unique prefix) or a row", at
            )
        rows = [i for i, name in enumerate(self.functions) if name.startswith(key)]
        if len(rows) != 1:
            problem = "no function" if not rows else f"{len(rows)} functions"
            raise ScenarioError(f"{where}={show(key)}: {problem} with that HashFunction prefix", at)
        return rows[0]


MAX_TRACE_COUNT = 1 << 40  # invocations in one minute of one function: above any real trace


@functools.lru_cache(maxsize=2)
def load_trace(path: Path) -> TraceTable:
    """An ``*_inv.csv`` file: HashFunction, HashApp, HashOwner (or Trigger), then one column per minute.

    Each row becomes an int64 array as it is read (8 bytes a count; Python lists of ints took ~36).
    Errors give the line and column, not the text: the file may be anything on the machine.
    """
    names: list[str] = []
    rows: list[np.ndarray] = []
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        try:
            header = next(reader, None)
            if header is None:
                raise ValueError("empty file: expected a header line")
            minute_columns = (i for i, name in enumerate(header) if name.startswith("minute") or name == "1")
            first_minute = next(minute_columns, None)
            if first_minute is None:
                raise ValueError("line 1: no per-minute columns (minute_1..., or 1...) in the header")
            minutes = len(header) - first_minute
            for row in reader:
                if not row:
                    continue
                rows.append(_counts(row[first_minute:], reader.line_num, first_minute, minutes))
                names.append(row[0])
        except csv.Error:
            raise ValueError(
                f"line {reader.line_num}: not CSV (e.g. a field over the CSV size limit)"
            ) from None
    if not rows:
        raise ValueError("no functions: expected one line per function after the header")
    return TraceTable(tuple(names), np.stack(rows))


def _counts(fields: list[str], line: int, first: int, minutes: int) -> np.ndarray:
    if len(fields) != minutes:
        raise ValueError(f"line {line}: {len(fields)} per-minute counts, the header has {minutes}")
    try:
        counts = np.array(fields, dtype=np.float64)
        valid = np.isfinite(counts) & (counts >= 0) & (counts <= MAX_TRACE_COUNT)
    except ValueError:  # some field is not a number at all: find which
        valid = np.array([_is_count(text) for text in fields])
    if not valid.all():
        raise ValueError(
            f"line {line}, column {first + int(np.argmin(valid)) + 1}: expected a per-minute count, "
            f"a whole number from 0 to {MAX_TRACE_COUNT:,}"
        )
    return counts.astype(np.int64)


def _is_count(text: str) -> bool:
    try:
        value = float(text)
    except ValueError:
        return False
    return math.isfinite(value) and 0 <= value <= MAX_TRACE_COUNT


def _duration(node: Node) -> float:
    return node.number("duration", above=0)


def _nonnegative(node: Node, key: str, default: object = None) -> float:
    if default is None:
        return node.number(key, minimum=0)
    return node.number(key, default, minimum=0)


def parse_phase(node: Node, base_dir: Path) -> Phase:
    kind = node.choice("type", TYPES)
    if kind == "poisson":
        node.only(("type", "rate", "duration"))
        return Poisson(_nonnegative(node, "rate"), _duration(node))
    if kind == "constant":
        node.only(("type", "rate", "duration"))
        return Constant(_nonnegative(node, "rate"), _duration(node))
    if kind == "step":
        node.only(("type", "from", "to", "at", "duration"))
        duration = _duration(node)
        return Step(
            _nonnegative(node, "from", 0), _nonnegative(node, "to"), _nonnegative(node, "at", 0), duration
        )
    if kind == "ramp":
        node.only(("type", "from", "to", "duration"))
        return Ramp(_nonnegative(node, "from", 0), _nonnegative(node, "to"), _duration(node))
    if kind == "burst":
        node.only(("type", "base", "rate", "every", "length", "duration"))
        every = node.number("every", above=0)
        length = node.number("length", above=0, maximum=every)
        return Burst(
            _nonnegative(node, "base", 0), _nonnegative(node, "rate"), every, length, _duration(node)
        )
    if kind == "sinusoid":
        node.only(("type", "mean", "amplitude", "period", "peak_at", "duration"))
        period = node.number("period", 86400, above=0)
        return Sinusoid(
            _nonnegative(node, "mean"),
            _nonnegative(node, "amplitude"),
            period,
            node.number("peak_at", period / 4),
            _duration(node),
        )
    if kind == "on_off":
        node.only(("type", "rate", "on", "off", "duration"))
        return OnOff(
            _nonnegative(node, "rate"), node.number("on", above=0), _nonnegative(node, "off"), _duration(node)
        )
    return _parse_trace(node, base_dir)


def _parse_trace(node: Node, base_dir: Path) -> Trace:
    node.only(("type", "file", "function", "functions", "start_minute", "scale", "duration"))
    table, _ = node.load("file", base_dir, load_trace, "not a per-minute trace: ")
    if node.has("function") == node.has("functions"):
        raise node.fail("trace needs exactly one of function or functions")
    if node.has("function"):
        rows = [table.find(node.raw("function"), join(node.path, "function"), node.position("function"))]
        label = table.functions[rows[0]][:12]
    else:
        chosen = node.raw("functions")
        where = join(node.path, "functions")
        if chosen == "all":
            rows = list(range(len(table.functions)))
            label = f"all {len(rows)} functions"
        elif isinstance(chosen, list) and chosen:
            at = positions_of(chosen)
            rows = [
                table.find(key, join(where, i), at.get(i, node.position("functions")))
                for i, key in enumerate(chosen)
            ]
            label = f"{len(rows)} functions"
        else:
            raise node.error("functions", 'expected a non-empty list of functions or "all"')
    minutes = table.counts.shape[1]
    start = node.integer("start_minute", 1, minimum=1)
    if start > minutes:
        raise node.error("start_minute", f"the trace has {minutes} minutes")
    counts = table.counts[rows, start - 1 :].sum(axis=0)
    available = len(counts) * 60.0
    duration = node.number("duration", available, above=0, maximum=available)
    return Trace(tuple(int(c) for c in counts), node.number("scale", 1.0, above=0), duration, label)


@dataclass(frozen=True)
class Workload:
    phases: tuple[Phase, ...]

    @property
    def duration(self) -> float:
        return sum(phase.duration for phase in self.phases)

    def expected_requests(self, until: float) -> float:
        return sum(expected for expected, _ in self._shares(until))

    def draws(self, until: float) -> list[float]:
        """Per phase, the arrivals (or thinning candidates) generated before ``until``: the run's work."""
        return [draws for _, draws in self._shares(until)]

    def _shares(self, until: float) -> list[tuple[float, float]]:
        shares, start = [], 0.0
        for phase in self.phases:
            share = min(1.0, max(0.0, until - start) / phase.duration)
            shares.append((phase.expected_requests() * share, phase.draws() * share))
            start += phase.duration
        return shares

    def arrivals(self, rng: np.random.Generator) -> Iterator[np.ndarray]:
        """Absolute arrival times, ascending, in blocks."""
        offset = 0.0
        for phase in self.phases:
            for block in phase.arrivals(rng):
                if block.size:
                    yield block + offset
            offset += phase.duration


def parse_workload(node: Node, key: str, base_dir: Path) -> Workload:
    """The phases listed under ``key`` of ``node``."""
    raw = node.raw(key)
    if not isinstance(raw, list) or not raw:
        raise ScenarioError(
            f"{join(node.path, key)}: expected a non-empty list of phases", node.position(key)
        )
    phases = (parse_phase(Node.of(item, path, at), base_dir) for path, item, at in node.items(key))
    return Workload(tuple(phases))
