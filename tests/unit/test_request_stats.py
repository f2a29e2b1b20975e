"""Time-weighted concurrency, with the worked examples of Knative's request stats tests."""

import pytest

from autoscaler.stat import Stat, StatError
from queueproxy.stats import RequestStats


def test_one_request_half_of_the_period_averages_one_half():
    s = RequestStats(now=0.0)
    s.request_in(0.0)
    s.request_out(3.0)
    r = s.report(6.0)
    assert r.average_concurrency == pytest.approx(0.5)
    assert r.request_count == 1


def test_overlapping_requests_average_one_and_a_half():
    s = RequestStats(now=0.0)
    s.request_in(0.0)
    s.request_in(0.1)
    s.request_out(0.6)
    s.request_out(1.0)
    assert s.report(1.0).average_concurrency == pytest.approx(1.5)


def test_request_spanning_reports_counts_once_and_keeps_its_concurrency():
    s = RequestStats(now=0.0)
    s.request_in(0.0)
    first = s.report(1.0)
    s.request_out(1.5)
    second = s.report(2.0)
    assert (first.average_concurrency, first.request_count) == (1.0, 1)
    assert (second.average_concurrency, second.request_count) == (0.5, 0)


def test_proxied_requests_count_in_totals_and_apart():
    s = RequestStats(now=0.0)
    s.request_in(0.0, proxied=True)
    s.request_in(0.0)
    r = s.report(1.0)
    assert r.average_concurrency == pytest.approx(2.0)
    assert r.average_proxied_concurrency == pytest.approx(1.0)
    assert (r.request_count, r.proxied_request_count) == (2, 1)


def test_report_with_no_elapsed_time_is_zero():
    assert RequestStats(now=5.0).report(5.0).average_concurrency == 0.0


def test_stat_round_trips_and_subtracts_proxied():
    stat = Stat("p", 20.0, 10.0, 30.0, 20.0, 12.0, 1.7e9)
    again = Stat.from_json(stat.to_json())
    assert again == stat
    assert (again.concurrency, again.rps) == (10.0, 10.0)


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ([], "JSON object"),
        ({"pod_name": 3}, "pod_name"),
        ({"request_count": "x"}, "request_count"),
        ({"request_count": -1}, "request_count"),
        ({"bogus": 1}, "bogus"),
    ],
    ids=["not-an-object", "pod-name-not-a-string", "count-not-a-number", "count-negative", "unknown-field"],
)
def test_bad_stat_documents_name_the_field(doc, message):
    with pytest.raises(StatError, match=message):
        Stat.from_json(doc)
