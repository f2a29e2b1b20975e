"""Pod probing state: new pods due at once, retried every period, healthy on the first pass."""

import pytest

from activator.probing import REFUSED_RETRY, PodHealth

A, B = "127.0.0.1:9001", "127.0.0.1:9002"


def test_new_endpoints_are_due_at_once_and_not_twice_while_a_probe_is_in_flight():
    h = PodHealth(frequency=0.2)
    h.set_endpoints([B, A], now=5.0)
    assert h.due(5.0) == [A, B]
    assert h.due(5.0) == []
    assert h.next_due() is None


def test_failed_probe_retries_after_one_period():
    h = PodHealth(frequency=0.2)
    h.set_endpoints([A], now=0.0)
    h.due(0.0)
    assert h.record(A, ok=False, now=0.05) is False
    assert h.next_due() == pytest.approx(0.25)
    assert h.due(0.2) == []
    assert h.due(0.25) == [A]


def test_one_passing_probe_makes_the_pod_healthy_and_it_is_not_probed_again():
    h = PodHealth()
    h.set_endpoints([A, B], now=0.0)
    h.due(0.0)
    assert h.record(A, ok=True, now=0.01) is True
    assert h.healthy == {A}
    h.record(B, ok=False, now=0.01)
    assert h.due(1.0) == [B]
    assert h.record(A, ok=True, now=1.0) is False  # already healthy


def test_removed_endpoint_leaves_the_healthy_set_and_late_results_are_ignored():
    h = PodHealth()
    h.set_endpoints([A, B], now=0.0)
    h.due(0.0)
    h.record(A, ok=True, now=0.0)
    assert h.set_endpoints([B], now=1.0) is True
    assert h.healthy == frozenset()
    assert h.record(A, ok=True, now=1.1) is False
    assert h.endpoints == {B}


def test_a_pod_that_refuses_traffic_is_distrusted_and_probed_at_once():
    h = PodHealth()
    h.set_endpoints([A], now=0.0)
    h.due(0.0)
    h.record(A, ok=True, now=0.0)
    assert h.mark_failed(A, now=3.0) is True
    assert h.healthy == frozenset()
    assert h.due(3.0) == [A]
    assert h.mark_failed(A, now=3.0) is False


@pytest.mark.parametrize("frequency", [0, -1.0, float("nan")])
def test_probe_frequency_must_be_positive(frequency):
    with pytest.raises(ValueError, match="probe frequency"):
        PodHealth(frequency=frequency)


def test_a_refused_probe_is_retried_sooner_than_the_period():
    h = PodHealth(frequency=0.2)
    h.set_endpoints([A], now=0.0)
    assert h.due(0.0) == [A]
    h.record(A, ok=False, now=0.01, refused=True)
    assert h.next_due() == pytest.approx(0.01 + REFUSED_RETRY)
    assert h.due(0.01 + REFUSED_RETRY) == [A]
