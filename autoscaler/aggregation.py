"""Knative's metric windows: bucketed averages over the stable/panic windows and the sliding maximum.

Three structures, each a faithful model of one in knative/serving ``pkg/autoscaler/aggregation``:

* :class:`BucketWindow` — ``TimedFloat64Buckets``: a ring of 1-second buckets whose linear average
  covers only the buckets that can hold data (a partial window after the first write, a window that
  shrinks over a trailing gap), rounded to 6 decimals half away from zero as Go's ``math.Round`` does.
* :class:`WeightedBucketWindow` — ``WeightedFloat64Buckets``: the same ring read as an exponentially
  weighted average (the ``weighted-exponential`` aggregation algorithm).
* :class:`MaxWindow` — ``max.TimeWindow``: a monotonic-deque sliding maximum over 2-second buckets,
  used for ``scale-down-delay``.

Everything takes ``now`` (seconds, non-negative epoch) from the caller. Bucket times are stored as
integer bucket indexes, so the hot paths are integer compares plus one float add.
"""

from __future__ import annotations

import math
from collections import deque

__all__ = ["BucketWindow", "MaxWindow", "WeightedBucketWindow", "round_half_away", "smoothing_coefficient"]

_NEVER = -(1 << 62)  # "no write yet": older than any window, like Go's zero time.Time
_PRECISION = 1_000_000.0  # averages are rounded to 6 decimals

# Weighted-exponential constants (bucketing.go): the weights of a full window sum to at least
# 0.9999, and the coefficient never drops below 0.2 (else long windows degrade to a plain average).
_WEIGHT_PRECISION = 0.9999
_MIN_COEFFICIENT = 0.2


def round_half_away(value: float, scale: float = _PRECISION) -> float:
    """Round ``value`` to ``1/scale`` with ties away from zero (Go ``math.Round``), not to even."""
    scaled = value * scale
    whole = math.trunc(scaled)
    if abs(scaled - whole) >= 0.5:
        whole += 1 if scaled > 0 else -1
    return whole / scale


def smoothing_coefficient(buckets: int) -> float:
    """The weighted-exponential decay for a window of ``buckets`` buckets: 60 → 0.2, 6 → 0.78456."""
    return max(1.0 - math.pow(1.0 - _WEIGHT_PRECISION, 1.0 / buckets), _MIN_COEFFICIENT)


def _bucket_count(window: float) -> int:
    if not window >= 1 or window != int(window):
        raise ValueError(f"window={window!r}: must be a whole number of seconds >= 1")
    return int(window)


class BucketWindow:
    """A window of 1-second buckets with Knative's linear ``WindowAverage``.

    Values recorded in the same second are summed: a scraped stat and several activator stats landing in
    one second make the revision-wide total. Gaps in the middle of the data count as zeros; a trailing
    gap (no data for the last few seconds) is left out of the divisor; a gap of a whole window resets it.
    """

    __slots__ = ("_buckets", "_first", "_last", "_size", "_total")

    def __init__(self, window: float) -> None:
        self._size = _bucket_count(window)
        self._buckets = [0.0] * self._size
        self._first = _NEVER  # bucket index of the first write since the last reset
        self._last = _NEVER  # bucket index of the newest write
        self._total = 0.0  # running sum of every slot in the ring

    @property
    def window(self) -> float:
        return float(self._size)

    def record(self, now: float, value: float) -> None:
        """Add ``value`` to the bucket of second ``floor(now)``; writes a whole window old are dropped."""
        self.record_bucket(math.floor(now), value)

    def record_bucket(self, bucket: int, value: float) -> None:
        """:meth:`record` for a caller that already knows the bucket (the second) of its value."""
        last = self._last
        size = self._size
        buckets = self._buckets
        if bucket == last + 1 and self._first != _NEVER:
            # The steady state, one write per second: recycle the slot a window old.
            slot = bucket % size
            self._total = self._total - buckets[slot] + value
            buckets[slot] = value
            self._last = bucket
            return
        if bucket != last:
            if last - bucket >= size:
                return  # older than the window: Knative drops it
            if self._first == _NEVER or bucket < self._first:
                self._first = bucket
            if bucket > last:
                if bucket - last >= size:
                    # Nothing was written for a whole window: start over with a partial window.
                    self._first = bucket
                    buckets[:] = [0.0] * size
                    self._total = 0.0
                else:
                    # Zero the slots skipped since the last write (they hold data a window old).
                    for i in range(last + 1, bucket + 1):
                        slot = i % size
                        self._total -= buckets[slot]
                        buckets[slot] = 0.0
                self._last = bucket
        buckets[bucket % size] += value
        self._total += value

    def is_empty(self, now: float) -> bool:
        """True when nothing was written within the window before ``now`` (Knative ``IsEmpty``)."""
        return math.floor(now) - self._last > self._size

    def average(self, now: float) -> float:
        """The linear window average at ``now``, over the buckets that can hold data."""
        current = math.floor(now)
        last = self._last
        size = self._size
        gap = current - last
        if gap >= size:
            return 0.0
        span = last - self._first + 1  # huge when the first write is unknown, so `size` wins
        if gap <= 0:
            return round_half_away(self._total / (span if span < size else size))
        total = self._total
        buckets = self._buckets
        for i in range(last + 1, current + 1):
            total -= buckets[i % size]
        room = size - gap
        return round_half_away(total / (span if span < room else room))

    def resize(self, window: float, now: float) -> None:
        """Change the window length, keeping the newest buckets (Knative ``ResizeWindow``)."""
        size = _bucket_count(window)
        if size == self._size:
            return
        old_size, old = self._size, self._buckets
        fresh = [0.0] * size
        total = 0.0
        if math.floor(now) - self._last <= old_size:
            index = self._last
            for _ in range(min(size, old_size)):
                value = old[index % old_size]
                fresh[index % size] = value
                total += value
                index -= 1
            self._first = self._last - (old_size - 1)
        else:
            self._first = _NEVER
        self._size, self._buckets, self._total = size, fresh, total


class WeightedBucketWindow(BucketWindow):
    """The same 1-second ring, averaged with exponentially decaying weights, newest bucket heaviest.

    The sum is neither normalised nor rounded; a trailing gap of k seconds starts the weights k steps
    further down the decay and reads k fewer buckets (Knative ``WeightedFloat64Buckets``).
    """

    __slots__ = ("_coefficient",)

    def __init__(self, window: float) -> None:
        super().__init__(window)
        self._coefficient = smoothing_coefficient(self._size)

    @property
    def coefficient(self) -> float:
        return self._coefficient

    def average(self, now: float) -> float:
        current = math.floor(now)
        size = self._size
        gap = current - self._last
        if gap > size:
            return 0.0
        m = self._coefficient
        keep = 1.0 - m
        multiplier = m
        count = size
        if gap > 0:
            multiplier *= keep**gap
            count -= gap
        buckets = self._buckets
        newest = self._last
        result = 0.0
        for i in range(count):
            result += buckets[(newest - i) % size] * multiplier
            multiplier *= keep
        return result

    def resize(self, window: float, now: float) -> None:
        super().resize(window, now)
        self._coefficient = smoothing_coefficient(self._size)


class MaxWindow:
    """Sliding maximum of integers over the last ``ceil(duration / granularity)`` buckets.

    Bucket index is ``floor(now / granularity)``. Recording a value drops every older entry not larger
    than it (they can never be the maximum again), evicts entries a full window old, and keeps the larger
    of two values recorded in one bucket. ``current`` is the maximum as of the last ``record``.
    """

    __slots__ = ("_entries", "_granularity", "_size")

    def __init__(self, duration: float, granularity: float = 2.0) -> None:
        if duration <= 0 or granularity <= 0:
            raise ValueError(f"duration={duration!r}, granularity={granularity!r}: both must be positive")
        self._granularity = granularity
        self._size = math.ceil(duration / granularity)
        self._entries: deque[tuple[int, int]] = deque()  # (bucket index, value), values descending

    @property
    def size(self) -> int:
        return self._size

    def record(self, now: float, value: int) -> None:
        index = math.floor(now / self._granularity)
        entries = self._entries
        while entries and entries[-1][1] <= value:
            entries.pop()
        while entries and index - entries[0][0] >= self._size:
            entries.popleft()
        if entries and entries[-1][0] == index:
            value = max(value, entries.pop()[1])
        entries.append((index, value))

    @property
    def current(self) -> int:
        return self._entries[0][1] if self._entries else 0
