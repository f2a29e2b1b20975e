"""Service-time and start-up-time distributions.

A simulation draws one value per request, so samplers hand out numbers from numpy draws made in
blocks: ``sampler()`` is a bound ``__next__`` of a generator over a Python list, which costs tens
of nanoseconds instead of a numpy call per value.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from simulation.schema import Node, join
from simulation.yamldoc import positions_of

KINDS = ("exponential", "constant", "lognormal", "empirical")
_BLOCK = 4096

Sampler = Callable[[], float]


def _blocks(draw: Callable[[int], np.ndarray]) -> Iterator[float]:
    while True:
        yield from draw(_BLOCK).tolist()


@dataclass(frozen=True)
class Exponential:
    mean: float

    def sampler(self, rng: np.random.Generator) -> Sampler:
        return _blocks(lambda n: rng.exponential(self.mean, n)).__next__

    def describe(self) -> str:
        return f"exponential(mean={self.mean:g})"


@dataclass(frozen=True)
class Constant:
    value: float

    @property
    def mean(self) -> float:
        return self.value

    def sampler(self, rng: np.random.Generator) -> Sampler:
        return itertools.repeat(self.value).__next__

    def describe(self) -> str:
        return f"constant({self.value:g})"


@dataclass(frozen=True)
class LogNormal:
    """Parameterised by the mean and standard deviation of the values themselves, not of their log."""

    mean: float
    sd: float

    def sampler(self, rng: np.random.Generator) -> Sampler:
        sigma2 = math.log1p((self.sd / self.mean) ** 2)
        mu = math.log(self.mean) - sigma2 / 2
        sigma = math.sqrt(sigma2)
        return _blocks(lambda n: rng.lognormal(mu, sigma, n)).__next__

    def describe(self) -> str:
        return f"lognormal(mean={self.mean:g}, sd={self.sd:g})"


@dataclass(frozen=True)
class Empirical:
    """Resamples measured values uniformly with replacement."""

    values: tuple[float, ...]
    source: str

    @property
    def mean(self) -> float:
        return float(np.mean(self.values))

    def sampler(self, rng: np.random.Generator) -> Sampler:
        values = np.asarray(self.values)
        return _blocks(lambda n: rng.choice(values, n)).__next__

    def describe(self) -> str:
        return f"empirical({self.source}, n={len(self.values)})"


Distribution = Exponential | Constant | LogNormal | Empirical


MAX_EMPIRICAL_VALUES = 1_000_000  # resampled values kept in memory (a tuple of floats: ~32 MB)
_EXPECTED = (
    "expected a number >= 0 (one per line; # comments, blank lines and text after a comma are ignored)"
)


def read_values(path: Path) -> tuple[float, ...]:
    """One number per line (the first comma-separated field); blank lines and ``#`` comments skipped.

    Errors give the line number and what was expected, never the line itself: the file may be any
    file on the machine, and its first line may be a secret.
    """
    values: list[float] = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            field = line.split("#", 1)[0].split(",", 1)[0].strip()
            if not field:
                continue
            try:
                value = float(field)
            except ValueError:
                raise ValueError(f"line {number}: {_EXPECTED}") from None
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"line {number}: {_EXPECTED}")
            if len(values) == MAX_EMPIRICAL_VALUES:
                raise ValueError(
                    f"line {number}: more than {MAX_EMPIRICAL_VALUES:,} values; resample the file"
                )
            values.append(value)
    if not values:
        raise ValueError("no values: expected one number per line")
    return tuple(values)


def parse_distribution(node: Node, base_dir: Path) -> Distribution:
    kind = node.choice("dist", KINDS)
    if kind == "exponential":
        node.only(("dist", "mean"))
        return Exponential(node.number("mean", above=0))
    if kind == "constant":
        node.only(("dist", "value"))
        return Constant(node.number("value", minimum=0))
    if kind == "lognormal":
        node.only(("dist", "mean", "sd"))
        return LogNormal(node.number("mean", above=0), node.number("sd", above=0))
    node.only(("dist", "file", "values"))
    if node.has("values") == node.has("file"):
        raise node.fail("empirical needs exactly one of file (one value per line) or values")
    if node.has("values"):
        raw = node.raw("values")
        if not isinstance(raw, list) or not raw:
            raise node.error("values", "expected a non-empty list of numbers")
        if len(raw) > MAX_EMPIRICAL_VALUES:
            raise node.error("values", f"more than {MAX_EMPIRICAL_VALUES:,} values")
        items = Node(
            dict(enumerate(raw)), join(node.path, "values"), node.position("values"), positions_of(raw)
        )
        return Empirical(tuple(items.number(i, minimum=0) for i in range(len(raw))), "inline")
    values, path = node.load("file", base_dir, read_values)
    return Empirical(values, path.name)
