"""Knative's bucketed windows (autoscaler.aggregation): bucketing.go and max/window.go behaviour."""

import pytest
from tables import named

from autoscaler.aggregation import (
    BucketWindow,
    MaxWindow,
    WeightedBucketWindow,
    round_half_away,
    smoothing_coefficient,
)

T0 = 1_000_000  # a bucket-aligned epoch second


def filled(window: int, values: list[float], start: int = T0, cls=BucketWindow) -> BucketWindow:
    w = cls(window)
    for i, value in enumerate(values):
        w.record(start + i, value)
    return w


def test_same_second_values_are_summed():  # §9.12: a scraper stat plus activator stats in one second
    w = BucketWindow(60)
    for value in (10, 10, 10):
        w.record(T0 + 0.3, value)
    assert w.average(T0 + 0.9) == 30


def test_moving_time_averages_over_the_seconds_written():  # TestMetricCollectorScraperMovingTime
    w = BucketWindow(60)
    w.record(T0, 30)
    w.record(T0 + 1, 40)
    assert w.average(T0 + 1) == 35


def test_fresh_window_averages_over_the_partial_window_since_first_write():  # §9.12
    w = filled(60, [6, 6, 6])
    assert w.average(T0 + 2) == 6  # 18 / 3 buckets, not / 60


def test_trailing_gap_shrinks_the_divisor():  # §2.3 worked example, §9.12
    w = filled(5, [1, 2, 3, 4, 5], start=T0 + 1)
    assert w.average(T0 + 5) == 3  # full window: 15 / 5
    assert w.average(T0 + 7) == 4  # two silent seconds: (15 - 1 - 2) / 3


def test_middle_gap_counts_as_zeros():  # §9.12
    w = BucketWindow(10)
    w.record(T0, 10)
    w.record(T0 + 4, 10)  # seconds 1..3 silent, zero-filled
    assert w.average(T0 + 4) == 4  # 20 / 5 buckets


def test_gap_of_a_whole_window_resets_the_window():  # §9.12
    w = filled(5, [100, 100, 100])
    w.record(T0 + 2 + 5, 7)  # five seconds after the last write
    assert w.average(T0 + 7) == 7  # a new partial window of one bucket


@pytest.mark.parametrize(
    ("label", "read_at", "want_avg", "want_empty"),
    named(
        [
            ("a window after the last write averages to zero but is not empty", T0 + 5, 0.0, False),
            ("past a window the set is empty", T0 + 6, 0.0, True),
            ("read inside the same second keeps the value", T0 + 0.999, 9.0, False),
        ]
    ),
)
def test_emptiness_is_strictly_after_a_window(label, read_at, want_avg, want_empty):  # §2.3
    w = BucketWindow(5)
    w.record(T0, 9)
    assert w.average(read_at) == want_avg, label
    assert w.is_empty(read_at) is want_empty, label


def test_never_written_window_is_empty_and_zero():
    w = BucketWindow(60)
    assert w.is_empty(T0)
    assert w.average(T0) == 0.0


@pytest.mark.parametrize(
    ("label", "late_second", "kept"),
    named(
        [
            ("a write exactly a window old is dropped", T0 + 10 - 5, False),
            ("a write inside the window is added to its bucket", T0 + 10 - 4, True),
        ]
    ),
)
def test_too_old_writes_are_dropped(label, late_second, kept):  # §2.2
    w = BucketWindow(5)
    w.record(T0 + 10, 5)
    w.record(late_second, 50)
    assert (w.average(T0 + 10) > 5) is kept, label


def test_late_write_moves_the_first_write_back():
    w = BucketWindow(10)
    w.record(T0 + 5, 10)
    w.record(T0 + 3, 10)  # older but inside the window: the partial window now starts at T0+3
    assert w.average(T0 + 5) == pytest.approx(20 / 3, abs=1e-6)


@pytest.mark.parametrize(
    ("value", "want"),
    [
        (1 / 3, 0.333333),
        (0.0000005, 0.000001),  # half rounds away from zero, not to even
        (0.0000025, 0.000003),
        (-0.0000005, -0.000001),
        (2.5e-7, 0.0),
    ],
    ids=[
        "one-third",
        "half-a-millionth-rounds-up",
        "two-and-a-half-millionths-round-up",
        "negative-half-rounds-away-from-zero",
        "a-quarter-millionth-rounds-to-zero",
    ],
)
def test_averages_round_to_six_decimals_half_away_from_zero(value, want):  # §9.23
    assert round_half_away(value) == want


def test_window_average_is_rounded():
    w = filled(3, [1, 1, 0])
    assert w.average(T0 + 2) == 0.666667


@pytest.mark.parametrize(
    ("buckets", "want"),
    [(60, 0.2), (40, 0.20567), (6, 0.78456), (4, 0.9)],
    ids=["60-buckets", "40-buckets", "6-buckets", "4-buckets"],
)
def test_smoothing_coefficient_formula(buckets, want):  # §2.4
    assert smoothing_coefficient(buckets) == pytest.approx(want, abs=5e-6)


def test_weighted_average_weighs_the_newest_bucket_most():
    w = filled(4, [10, 10, 5, 5], cls=WeightedBucketWindow)  # m = 0.9 for four buckets
    expected = 5 * 0.9 + 5 * 0.9 * 0.1 + 10 * 0.9 * 0.01 + 10 * 0.9 * 0.001
    assert w.average(T0 + 3) == pytest.approx(expected)
    reversed_order = filled(4, [5, 5, 10, 10], cls=WeightedBucketWindow)
    assert reversed_order.average(T0 + 3) > w.average(T0 + 3)


def test_weighted_trailing_gap_starts_further_down_the_decay():  # §2.4
    w = filled(4, [10, 10, 5, 5], cls=WeightedBucketWindow)
    # Two silent seconds: weights start at m(1-m)^2 and only two buckets are read.
    assert w.average(T0 + 5) == pytest.approx(5 * 0.9 * 0.01 + 5 * 0.9 * 0.001)


def test_weighted_average_of_no_data_is_zero():
    w = WeightedBucketWindow(6)
    assert w.average(T0) == 0.0
    w.record(T0, 4)
    assert w.average(T0 + 7) == 0.0


def test_resize_keeps_the_newest_buckets():  # §2.5
    w = filled(5, [1, 2, 3, 4, 5])
    w.resize(3, T0 + 4)
    assert w.window == 3
    assert w.average(T0 + 4) == 4  # (3 + 4 + 5) / 3
    w.resize(10, T0 + 4)
    # Growing keeps the three buckets; the first write is put one old window back: 12 / 3.
    assert w.average(T0 + 4) == 4
    w.record(T0 + 5, 8)
    assert w.average(T0 + 5) == 5  # (12 + 8) / 4


def test_resize_after_a_silent_window_forgets_the_data():  # §2.5
    w = filled(5, [1, 2, 3])
    w.resize(10, T0 + 20)
    w.record(T0 + 20, 6)
    assert w.average(T0 + 20) == 6


def test_weighted_resize_recomputes_the_coefficient():
    w = WeightedBucketWindow(60)
    w.resize(6, T0)
    assert w.coefficient == pytest.approx(0.78456, abs=5e-6)


@pytest.mark.parametrize("window", [0, 0.5, 6.5, -1])
def test_window_must_be_whole_seconds(window):
    with pytest.raises(ValueError, match="whole number of seconds"):
        BucketWindow(window)


def test_max_window_keeps_a_value_for_the_whole_delay():  # §1.6 example: 300 s = 150 buckets
    m = MaxWindow(300, 2)
    assert m.size == 150
    m.record(2, 4)
    m.record(300, 0)
    assert m.current == 4  # index 150 - 1 = 149
    m.record(302, 0)
    assert m.current == 0  # index 151 - 1 = 150: evicted


def test_max_window_drops_smaller_older_values():
    m = MaxWindow(10, 2)  # 5 buckets
    m.record(0, 3)
    m.record(2, 5)
    m.record(4, 1)
    assert m.current == 5
    m.record(12, 1)  # index 6: 5 (index 1) evicted, leaves 1
    assert m.current == 1


def test_max_window_same_bucket_keeps_the_larger():
    m = MaxWindow(10, 2)
    m.record(4, 7)
    m.record(5, 2)  # same 2-second bucket
    assert m.current == 7
    m.record(5.5, 9)
    assert m.current == 9


def test_max_window_size_rounds_up():
    assert MaxWindow(5, 2).size == 3
    assert MaxWindow(1, 2).size == 1


def test_empty_max_window_reads_zero():
    assert MaxWindow(10).current == 0


def test_first_write_after_a_forgetting_resize_starts_a_partial_window():
    w = filled(5, [1, 2, 3])
    w.resize(10, T0 + 20)  # no write within the old window: the data is forgotten
    w.record(T0 + 3, 6)  # one second after the old last write
    assert w.average(T0 + 3) == 6
