"""Stat collection (autoscaler.collection): collector.go, sample_size.go and stats_scraper.go behaviour."""

import random

import pytest

from autoscaler.collection import (
    SCRAPER_POD_NAME,
    MetricCollection,
    NoDataError,
    ScrapePod,
    extrapolate,
    sample_size,
    scrape_order,
)
from autoscaler.stat import Stat

T0 = 1_000_000.0


def stat(
    concurrency: float = 0.0, proxied: float = 0.0, requests: float = 0.0, proxied_requests: float = 0.0
):
    return Stat(
        pod_name="p",
        average_concurrent_requests=concurrency,
        average_proxied_concurrent_requests=proxied,
        request_count=requests,
        proxied_request_count=proxied_requests,
    )


def test_proxied_requests_are_subtracted():  # §9.15, TestMetricCollectorRecord: 20-10 and 30-20
    c = MetricCollection(60, 6)
    c.record(stat(concurrency=20, proxied=10, requests=30, proxied_requests=20), T0)
    assert c.stable_and_panic_concurrency(T0) == (10, 10)
    assert c.stable_and_panic_rps(T0) == (10, 10)


def test_stats_of_one_second_add_up_to_the_revision_total():  # §9.12
    c = MetricCollection(60, 6)
    for _ in range(3):
        c.record(stat(concurrency=10), T0 + 0.5)
    assert c.stable_and_panic_concurrency(T0 + 0.5) == (30, 30)


def test_stable_and_panic_windows_differ_in_length():
    c = MetricCollection(10, 2)
    for i in range(10):
        c.record(stat(concurrency=10 if i < 8 else 40), T0 + i)
    stable, panic = c.stable_and_panic_concurrency(T0 + 9)
    assert (stable, panic) == (16, 40)  # (8·10 + 2·40) / 10 and 80 / 2


def test_empty_windows_with_a_scrape_target_have_no_data():  # §9.11
    c = MetricCollection(60, 6)
    with pytest.raises(NoDataError):
        c.stable_and_panic_concurrency(T0)
    c.record(stat(concurrency=5), T0)
    with pytest.raises(NoDataError):
        c.stable_and_panic_rps(T0 + 61)


def test_without_a_scrape_target_empty_windows_are_valid_zeros():  # §9.11: TBC = -1
    c = MetricCollection(60, 6, has_scrape_target=False)
    assert c.stable_and_panic_concurrency(T0) == (0.0, 0.0)
    assert c.stable_and_panic_rps(T0) == (0.0, 0.0)


def test_weighted_exponential_collection_weighs_recent_seconds():
    linear = MetricCollection(60, 6)
    weighted = MetricCollection(60, 6, aggregation="weighted-exponential")
    for i in range(60):
        for c in (linear, weighted):
            c.record(stat(concurrency=100 if i >= 55 else 0), T0 + i)
    assert linear.stable_and_panic_concurrency(T0 + 59)[0] == pytest.approx(500 / 60, abs=1e-6)
    assert weighted.stable_and_panic_concurrency(T0 + 59)[0] > 60  # 1 - 0.8^5 of 100


def test_unknown_aggregation_is_rejected():
    with pytest.raises(ValueError, match="aggregation='median'"):
        MetricCollection(60, 6, aggregation="median")


def test_update_resizes_the_windows_and_keeps_recent_data():
    c = MetricCollection(60, 6)
    for i in range(10):
        c.record(stat(concurrency=i), T0 + i)
    c.update(stable_window=10, panic_window=2, aggregation="linear", has_scrape_target=True, now=T0 + 9)
    assert (c.stable_window, c.panic_window) == (10, 2)
    assert c.stable_and_panic_concurrency(T0 + 9) == (4.5, 8.5)


def test_update_to_another_algorithm_starts_fresh_windows():
    c = MetricCollection(60, 6)
    c.record(stat(concurrency=9), T0)
    c.update(60, 6, "weighted-exponential", has_scrape_target=True, now=T0)
    with pytest.raises(NoDataError):
        c.stable_and_panic_concurrency(T0)


@pytest.mark.parametrize(
    ("pods", "want"),
    [(-1, 0), (0, 0), (1, 1), (2, 2), (3, 3), (5, 4), (10, 7), (100, 14), (1000, 16)],
    ids=[
        "negative-pods",
        "0-pods",
        "1-pod",
        "2-pods",
        "3-pods",
        "5-pods",
        "10-pods",
        "100-pods",
        "1000-pods",
    ],
)
def test_sample_size_formula(pods, want):  # §3.3
    assert sample_size(pods) == want


def test_sample_size_levels_off_near_sixteen():
    assert sample_size(1_000_000) == 16


def pods(old: int, young: int, now: float, window: float = 60.0) -> list[ScrapePod]:
    return [ScrapePod(f"old-{i}", now - window - i) for i in range(old)] + [
        ScrapePod(f"young-{i}", now - i) for i in range(young)
    ]


def test_enough_old_pods_are_shuffled_and_tried_first():
    order = scrape_order(pods(old=10, young=5, now=T0), 60, T0, random.Random(7))
    assert {name for name in order[:10]} == {f"old-{i}" for i in range(10)}
    assert order[10:] == [f"young-{i}" for i in range(5)]
    assert order[:10] != [f"old-{i}" for i in range(10)]  # shuffled (seeded)


def test_too_few_old_pods_are_all_used_and_young_pods_fill_shuffled():
    order = scrape_order(pods(old=2, young=10, now=T0), 60, T0, random.Random(3))
    assert order[:2] == ["old-0", "old-1"]
    assert sorted(order[2:]) == sorted(f"young-{i}" for i in range(10))
    assert order[2:] != [f"young-{i}" for i in range(10)]


def test_a_pod_exactly_a_stable_window_old_counts_as_old():
    pods = [ScrapePod("young", T0 - 59.9), ScrapePod("edge", T0 - 60)]
    order = scrape_order(pods, 60, T0, random.Random(1))
    assert order[0] == "edge"


@pytest.mark.parametrize(
    ("values", "ready", "want"),
    [
        ([3, 5, 3], 3, 11),  # (3 + 5 + 3) / 3 · 3
        ([2, 4, 6, 8, 10], 6, 36),
        ([5, 9, 13, 17, 21, 14, 19], 11, 154),  # 98 / 7 · 11
    ],
    ids=["3-of-3-sampled", "5-sampled-of-6", "7-sampled-of-11"],
)
def test_extrapolation_scales_the_sample_mean_to_all_ready_pods(values, ready, want):  # §3.3
    result = extrapolate([stat(concurrency=v, requests=2 * v) for v in values], ready)
    assert result.pod_name == SCRAPER_POD_NAME
    assert result.average_concurrent_requests == pytest.approx(want)
    assert result.request_count == pytest.approx(2 * want)


def test_extrapolation_keeps_proxied_fields_apart():
    result = extrapolate([stat(concurrency=4, proxied=2, requests=4, proxied_requests=1)], 3)
    assert (result.concurrency, result.rps) == (6, 9)


def test_extrapolating_nothing_is_an_error():
    with pytest.raises(ValueError, match="at least one"):
        extrapolate([], 3)
