"""The breaker's admission rules, pinned to Knative's breaker_test.go behaviour."""

import pytest

from queueproxy.breaker import Admission, Breaker


def test_depth_one_cc_one_admits_two_and_rejects_the_third_at_once():
    b: Breaker[str] = Breaker(queue_depth=1, max_concurrency=1)
    assert b.acquire("a") is Admission.ADMITTED
    assert b.acquire("b") is Admission.QUEUED
    assert b.acquire("c") is Admission.REJECTED
    assert b.in_flight == 2


def test_release_admits_waiters_in_fifo_order():
    b: Breaker[str] = Breaker(queue_depth=10, max_concurrency=1)
    assert b.acquire("first") is Admission.ADMITTED
    assert [b.acquire(t) for t in ("w1", "w2", "w3")] == [Admission.QUEUED] * 3
    assert b.release() == ["w1"]
    assert b.release() == ["w2"]
    assert b.release() == ["w3"]
    assert b.release() == []
    assert (b.in_flight, b.executing) == (0, 0)


def test_eleven_cc_admitted_then_rejected():
    cc = 4
    b: Breaker[int] = Breaker(queue_depth=10 * cc, max_concurrency=cc)
    results = [b.acquire(i) for i in range(11 * cc + 1)]
    assert results.count(Admission.ADMITTED) == cc
    assert results.count(Admission.QUEUED) == 10 * cc
    assert results[-1] is Admission.REJECTED


def test_reserve_twice_without_release_gives_true_then_false():
    b: Breaker[str] = Breaker(queue_depth=1, max_concurrency=1)
    assert b.reserve() is True
    assert b.reserve() is False
    b.release()
    assert b.reserve() is True


def test_zero_initial_capacity_queues_until_capacity_grows():
    b: Breaker[str] = Breaker(queue_depth=5, max_concurrency=3, initial_capacity=0)
    assert b.acquire("a") is Admission.QUEUED
    assert b.acquire("b") is Admission.QUEUED
    assert b.update_concurrency(1) == ["a"]
    assert b.update_concurrency(3) == ["b"]


def test_shrinking_capacity_holds_waiters_until_executing_drops_below_it():
    b: Breaker[str] = Breaker(queue_depth=5, max_concurrency=2)
    b.acquire("a")
    b.acquire("b")
    b.acquire("w")
    assert b.update_concurrency(1) == []
    assert b.release() == []  # 1 executing, capacity 1
    assert b.release() == ["w"]


def test_cancelled_waiter_frees_its_slot_and_is_never_admitted():
    b: Breaker[str] = Breaker(queue_depth=1, max_concurrency=1)
    b.acquire("a")
    b.acquire("w")
    assert b.acquire("x") is Admission.REJECTED
    assert b.cancel("w") is True
    assert b.cancel("w") is False
    assert b.acquire("x") is Admission.QUEUED
    assert b.release() == ["x"]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"queue_depth": -1, "max_concurrency": 1},
        {"queue_depth": 1, "max_concurrency": -1},
        {"queue_depth": 1, "max_concurrency": 1, "initial_capacity": 2},
    ],
    ids=["negative-queue-depth", "negative-concurrency", "capacity-above-concurrency"],
)
def test_invalid_parameters_are_rejected_with_the_name(kwargs):
    with pytest.raises(ValueError, match="breaker"):
        Breaker(**kwargs)


def test_release_without_admission_is_an_error():
    with pytest.raises(RuntimeError):
        Breaker(queue_depth=1, max_concurrency=1).release()
