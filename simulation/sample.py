"""Latencies (or waits) of completed requests, in memory that does not grow with the run.

Up to :data:`EXACT_LIMIT` values are kept exactly (8 bytes each, in an ``array``), and the report's
mean and percentiles are numpy's over them, as they always were. Past that the values fold, a block
at a time, into a histogram of logarithmic buckets: every value ``v`` > 0 is counted in the bucket
``⌈log_γ v⌉`` with γ = (1 + α)/(1 − α), and a percentile is the bucket's midpoint ``2γ^i/(γ + 1)``,
within a relative error α = :data:`RELATIVE_ERROR` of a value whose rank is the requested one (the
DDSketch bound). Zeros (a request served at once waits 0) are counted on their own and stay exact.
The mean stays exact to rounding: it is a running sum.
"""

from __future__ import annotations

import math
from array import array

import numpy as np

__all__ = ["EXACT_LIMIT", "RELATIVE_ERROR", "Sample"]

EXACT_LIMIT = 10_000_000  # values kept exactly: 80 MB per sample (latency and wait: 160 MB)
RELATIVE_ERROR = 0.001  # α of the histogram past the exact limit: percentiles within 0.1 %
FOLD_BLOCK = 1_000_000  # values buffered between folds once past the limit
_GAMMA = (1 + RELATIVE_ERROR) / (1 - RELATIVE_ERROR)
_LOG_GAMMA = math.log(_GAMMA)
_SMALLEST = 1e-9  # a positive value below a nanosecond counts as a nanosecond
_LARGEST = 1e9  # seconds: above any simulated span (limits.MAX_SIMULATED_SECONDS)
_OFFSET = math.ceil(math.log(_SMALLEST) / _LOG_GAMMA)
_BUCKETS = math.ceil(math.log(_LARGEST) / _LOG_GAMMA) - _OFFSET + 1


class Sample:
    """``append`` values (seconds, >= 0); read ``mean()`` and ``percentile(q)``.

    The owner calls :meth:`fold_due` rarely (e.g. when its completion count reaches
    :attr:`next_check`), so that ``append`` stays the array's own C method.
    """

    def __init__(self, exact_limit: int = EXACT_LIMIT) -> None:
        self._values = array("d")
        self.append = self._values.append
        self.next_check = exact_limit  # how many values before fold_due has anything to do
        self._exact_limit = exact_limit
        self._buckets: np.ndarray | None = None  # counts per bucket, once folding
        self._zeros = 0
        self._count = 0  # values folded
        self._sum = 0.0  # of values folded

    @property
    def exact(self) -> bool:
        """True while every value is kept (the figures are numpy's over them)."""
        return self._buckets is None

    def __len__(self) -> int:
        return self._count + len(self._values)

    def values(self) -> np.ndarray:
        """The values themselves, while :attr:`exact`."""
        if self._buckets is not None:
            raise ValueError(f"more than {self._exact_limit:,} values: only a histogram is kept")
        return np.frombuffer(self._values, dtype=np.float64) if self._values else np.empty(0)

    def fold_due(self) -> None:
        """Past the exact limit, move the buffered values into the histogram."""
        if len(self._values) >= self._exact_limit or self._buckets is not None:
            self._fold()
        self.next_check = len(self) + (FOLD_BLOCK if self._buckets is not None else self._exact_limit)

    def _fold(self) -> None:
        if self._buckets is None:
            self._buckets = np.zeros(_BUCKETS, dtype=np.int64)
        block = np.frombuffer(self._values, dtype=np.float64) if self._values else np.empty(0)
        positive = block[block > 0]
        self._zeros += block.size - positive.size
        self._count += block.size
        self._sum += float(block.sum())
        index = (
            np.ceil(np.log(np.clip(positive, _SMALLEST, _LARGEST)) / _LOG_GAMMA).astype(np.int64) - _OFFSET
        )
        self._buckets += np.bincount(np.clip(index, 0, _BUCKETS - 1), minlength=_BUCKETS)
        self._values = array("d")
        self.append = self._values.append

    def mean(self) -> float | None:
        if not len(self):
            return None
        if self._buckets is None:
            return float(self.values().mean())
        self._fold()
        return self._sum / self._count

    def percentile(self, q: float) -> float | None:
        """numpy's ``percentile`` while exact; past that, the histogram's value of rank q % (α-accurate)."""
        if not len(self):
            return None
        if self._buckets is None:
            return float(np.percentile(self.values(), q))
        self._fold()
        rank = q / 100 * (self._count - 1)
        if rank < self._zeros:
            return 0.0
        cumulative = np.cumsum(self._buckets) + self._zeros
        i = int(np.searchsorted(cumulative, rank, side="right"))
        return 2 * _GAMMA ** (i + _OFFSET) / (_GAMMA + 1)
