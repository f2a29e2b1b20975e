"""Properties of the metric windows (autoscaler.aggregation) on any sequence of writes and reads.

The ring buffers are checked against plain models written from Knative's rules (reference §2.2-2.3,
§1.6), with writes in any order, gaps of any length and reads at any time:

* ``BucketWindow``: the average is the sum of the buckets from ``max(first write, reference − window
  + 1)`` to the last write over their count, where the reference second is the later of ``now`` and
  the last write — so it always lies between the smallest and largest bucket of that span (a middle
  gap counts as a zero bucket, a trailing gap is left out, a gap of a whole window starts afresh);
* ``WeightedBucketWindow``: never negative and never above the largest bucket;
* ``MaxWindow``: the maximum of the values recorded in the last ``size`` two-second buckets.
"""

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from autoscaler.aggregation import BucketWindow, MaxWindow, WeightedBucketWindow, round_half_away

SETTINGS = settings(max_examples=200, deadline=None, derandomize=True)

values = st.floats(0, 1e6, allow_nan=False, allow_infinity=False)
# (seconds since the previous write, value): 0 repeats the second, negative goes back in time.
steps = st.lists(st.tuples(st.integers(-12, 30), values), min_size=1, max_size=40)
window_sizes = st.integers(1, 12)


class LinearModel:
    """Knative's TimedFloat64Buckets written the obvious way: a dict of every bucket ever kept."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.buckets: dict[int, float] = {}
        self.first: int | None = None
        self.last: int | None = None

    def record(self, second: int, value: float) -> None:
        if self.last is not None and self.last - second >= self.size:
            return  # a whole window older than the newest write: dropped
        if self.first is None or second < self.first:
            self.first = second
        if self.last is None or second > self.last:
            if self.last is not None and second - self.last >= self.size:
                self.buckets.clear()
                self.first = second
            self.last = second
        self.buckets[second] = self.buckets.get(second, 0.0) + value

    def span(self, now: int) -> list[float]:
        """The buckets the average is over, zeros included; empty when there is nothing to read."""
        if self.last is None or now - self.last >= self.size:
            return []
        low = max(self.first, max(now, self.last) - self.size + 1)
        return [self.buckets.get(second, 0.0) for second in range(low, self.last + 1)]


def close(a: float, b: float, scale: float) -> bool:
    # The ring keeps a running total (as Knative does), the model sums afresh: allow float drift
    # plus one unit of the 6-decimal rounding.
    return abs(a - b) <= 2e-6 + 1e-9 * scale


@SETTINGS
@given(size=window_sizes, writes=steps, reads=st.lists(st.integers(-15, 40), min_size=1, max_size=5))
def test_linear_average_is_the_mean_of_its_span(size, writes, reads):
    window, model = BucketWindow(size), LinearModel(size)
    second = 1_000_000
    for delta, value in writes:
        second += delta
        window.record(second + 0.5, value)  # any time within the second lands in its bucket
        model.record(second, value)
    largest = max(value for _, value in writes)
    for offset in reads:
        now = second + offset
        span = model.span(now)
        got = window.average(now + 0.25)
        if not span:
            assert got == 0.0
            continue
        want = round_half_away(math.fsum(span) / len(span))
        assert close(got, want, largest * len(writes)), (got, want, span)
        assert min(span) - 2e-6 - 1e-9 * largest * len(writes) <= got
        assert got <= max(span) + 2e-6 + 1e-9 * largest * len(writes)


@SETTINGS
@given(size=window_sizes, writes=steps, offset=st.integers(0, 40))
def test_weighted_average_stays_between_zero_and_the_largest_bucket(size, writes, offset):
    window, model = WeightedBucketWindow(size), LinearModel(size)
    second = 1_000_000
    for delta, value in writes:
        second += delta
        window.record(second, value)
        model.record(second, value)
    got = window.average(second + offset)
    largest = max(model.buckets.values(), default=0.0)
    assert 0.0 <= got <= largest * (1 + 1e-9) + 1e-9


@SETTINGS
@given(
    size=window_sizes,
    start=st.integers(0, 10_000),
    writes=st.lists(st.tuples(st.floats(0, 7), st.integers(0, 1000)), min_size=1, max_size=40),
)
def test_max_window_is_the_maximum_of_the_last_buckets(size, start, writes):
    window = MaxWindow(duration=2.0 * size, granularity=2.0)
    assert window.size == size
    now = float(start)
    history: list[tuple[int, int]] = []
    for delta, value in writes:  # times only move forward, as the decider's do
        now += delta
        window.record(now, value)
        index = math.floor(now / 2.0)
        history.append((index, value))
        assert window.current == max(v for i, v in history if index - i < size)
