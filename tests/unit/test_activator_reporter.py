"""What the activator tells the autoscaler: an immediate stat at zero, then corrected 1 s reports."""

import pytest

from activator.reporter import ConcurrencyReporter
from autoscaler.stat import Stat


def stat(avg, count):
    return Stat(pod_name="activator-0", average_concurrent_requests=avg, request_count=count)


def test_first_request_for_an_untracked_revision_sends_a_stat_at_once():
    r = ConcurrencyReporter("activator-0")
    assert r.request_in("ns/rev", now=0.0) == stat(1.0, 1.0)
    assert r.request_in("ns/rev", now=0.1) is None
    assert r.request_in("ns/other", now=0.2) == stat(1.0, 1.0)


@pytest.mark.parametrize(
    ("events", "report_at", "expected"),
    [
        # one request held the whole second: avg 1, count 1, both minus the first-request correction
        ([("in", 0.0)], 1.0, stat(0.0, 0.0)),
        # two requests for the whole second: avg 2 - 1, count 2 - 1
        ([("in", 0.0), ("in", 0.0)], 1.0, stat(1.0, 1.0)),
        # three arrivals, one leaving half way: avg 2.5 - 1 = 1.5, count 3 - 1
        ([("in", 0.0), ("in", 0.0), ("in", 0.0), ("out", 0.5)], 1.0, stat(1.5, 2.0)),
        # correction never makes a figure negative
        ([("in", 0.0), ("out", 0.25)], 1.0, stat(0.0, 0.0)),
    ],
    ids=["one-held-all-second", "two-held", "one-leaves-half-way", "never-negative"],
)
def test_first_periodic_report_subtracts_the_immediate_stat(events, report_at, expected):
    r = ConcurrencyReporter("activator-0")
    for kind, at in events:
        (r.request_in if kind == "in" else r.request_out)("k", at)
    assert r.report(report_at) == [("k", expected)]


def test_later_reports_are_not_corrected():
    r = ConcurrencyReporter("activator-0")
    r.request_in("k", 0.0)
    r.report(1.0)
    r.request_in("k", 1.5)
    assert r.report(2.0) == [("k", stat(1.5, 1.0))]  # 1 for the whole second + 1 for half of it


def test_time_spent_held_counts_as_concurrency():
    r = ConcurrencyReporter("activator-0")
    r.request_in("k", 0.0)  # held for 3 s, then served for 1 s
    r.report(1.0)
    assert r.report(2.0) == [("k", stat(1.0, 0.0))]
    assert r.report(3.0) == [("k", stat(1.0, 0.0))]
    r.request_out("k", 3.5)
    assert r.report(4.0) == [("k", stat(0.5, 0.0))]


def test_idle_revision_is_forgotten_and_its_next_request_is_reported_at_once_again():
    r = ConcurrencyReporter("activator-0")
    r.request_in("k", 0.0)
    r.request_out("k", 0.5)
    assert r.report(1.0) == [("k", stat(0.0, 0.0))]  # avg 0.5 - 1 → 0: still tracked (avg was not 0)
    assert r.tracked() == ["k"]
    assert r.report(2.0) == [("k", stat(0.0, 0.0))]  # a whole idle second: reported, then forgotten
    assert r.tracked() == []
    assert r.report(3.0) == []
    assert r.request_in("k", 3.5) == stat(1.0, 1.0)


def test_revision_with_a_request_in_flight_is_never_forgotten():
    r = ConcurrencyReporter("activator-0")
    r.request_in("k", 0.0)
    for second in range(1, 5):
        r.report(float(second))
    assert r.tracked() == ["k"]
    assert r.request_in("k", 5.0) is None
