"""The activator's throttler: capacity from pods, LB policy by cc, a bounded wait queue, deadlines."""

import random

import pytest
from tables import named

from activator.throttler import (
    UNLIMITED,
    Expired,
    Grant,
    RevisionThrottler,
    assign_slice,
)
from queueproxy.breaker import Admission

PODS6 = [f"10.0.0.{i}:8012" for i in range(6)]


def throttler(cc, pods=(), *, queue_bound=None, seed=1, slot=(-1, 1)):
    t = RevisionThrottler(cc, queue_bound=queue_bound, rng=random.Random(seed))
    t.update_backends(pods, now=0.0, activator_index=slot[0], activator_count=slot[1])
    return t


def send(t, ticket, now=0.0, deadline=100.0):
    return t.acquire(ticket, now, deadline)


@pytest.mark.parametrize(
    ("pods", "index", "count", "expected"),
    [
        (PODS6, 0, 4, [PODS6[0], PODS6[4]]),  # Knative's example: slice 1 plus tail[0]
        (PODS6, 1, 4, [PODS6[1], PODS6[5]]),
        (PODS6, 2, 4, [PODS6[2]]),
        (PODS6, 3, 4, [PODS6[3]]),
        (PODS6[:5], 0, 2, [PODS6[0], PODS6[1], PODS6[4]]),  # 5 pods, 2 activators: 3 and 2
        (PODS6[:5], 1, 2, [PODS6[2], PODS6[3]]),
        (PODS6[:2], 3, 4, [PODS6[1]]),  # more activators than pods: pod index mod pods
        (PODS6[:1], 1, 2, [PODS6[0]]),  # one pod: everyone takes it
        (PODS6, -1, 4, PODS6),  # this activator is not in the list: take all
        (PODS6, 0, 1, PODS6),
        (list(reversed(PODS6)), 0, 3, PODS6[0:2]),  # split over the sorted list
    ],
    ids=[
        "4-activators-slot-0",
        "4-activators-slot-1",
        "4-activators-slot-2",
        "4-activators-slot-3",
        "5-pods-2-activators-slot-0",
        "5-pods-2-activators-slot-1",
        "more-activators-than-pods",
        "one-pod",
        "not-in-the-list",
        "one-activator",
        "unsorted-pods",
    ],
)
def test_assign_slice_matches_knatives_split(pods, index, count, expected):
    assert assign_slice(pods, index, count) == expected


@pytest.mark.parametrize(
    ("pods", "activators"),
    named(
        [(6, 4), (5, 2), (7, 3), (4, 4), (10, 3)],
        lambda pods, activators: f"{pods}-pods-{activators}-activators",
    ),
)
def test_assign_slice_gives_each_pod_to_exactly_one_activator(pods, activators):
    addresses = [f"p{i:02d}" for i in range(pods)]
    slices = [assign_slice(addresses, i, activators) for i in range(activators)]
    flat = sorted(a for s in slices for a in s)
    assert flat == addresses


@pytest.mark.parametrize(
    ("cc", "pods", "slot", "capacity"),
    [
        (1, 0, (-1, 1), 0),
        (1, 3, (-1, 1), 3),
        (10, 6, (0, 4), 20),  # two pods assigned
        (10, 6, (2, 4), 10),
        (1, 5, (0, 2), 3),
        (1, 5, (1, 2), 2),
        (0, 0, (-1, 1), 0),
        (0, 3, (0, 4), UNLIMITED),  # cc=0: every activator uses every pod, capacity unbounded
    ],
    ids=[
        "cc1-no-pods",
        "cc1-3-pods",
        "cc10-slot-0-of-4",
        "cc10-slot-2-of-4",
        "cc1-5-pods-slot-0-of-2",
        "cc1-5-pods-slot-1-of-2",
        "unlimited-no-pods",
        "unlimited-with-pods",
    ],
)
def test_capacity_is_cc_times_assigned_pods(cc, pods, slot, capacity):
    t = throttler(cc, PODS6[:pods], slot=slot)
    assert t.capacity == capacity


def test_first_available_packs_pods_in_address_order_for_small_cc():
    t = throttler(2, [PODS6[2], PODS6[0], PODS6[1]])
    grants = [send(t, i) for i in range(6)]
    assert [g.address for g in grants] == [PODS6[0]] * 2 + [PODS6[1]] * 2 + [PODS6[2]] * 2
    t.release(grants[2], now=1.0)  # frees a slot on pod 1
    assert send(t, 99).address == PODS6[1]


def test_round_robin_spreads_and_resumes_after_the_last_choice_for_cc_above_3():
    t = throttler(4, PODS6[:3])
    first = [send(t, i).address for i in range(4)]
    assert first == [PODS6[0], PODS6[1], PODS6[2], PODS6[0]]
    assert send(t, 4).address == PODS6[1]


def test_round_robin_skips_full_pods():
    t = throttler(4, PODS6[:2])
    grants = [send(t, i) for i in range(7)]  # 8 slots; pod0 4, pod1 3
    assert [t.in_flight_at(p) for p in PODS6[:2]] == [4, 3]
    assert send(t, 7).address == PODS6[1]
    assert send(t, 8) is Admission.QUEUED
    assert grants


def test_power_of_two_choices_prefers_the_less_loaded_pod_for_cc_0():
    t = throttler(0, PODS6[:2], seed=7)
    busy = [send(t, i) for i in range(40)]
    loads = [t.in_flight_at(p) for p in PODS6[:2]]
    assert abs(loads[0] - loads[1]) <= 1  # two pods: always compares both
    for g in busy:
        if g.address == PODS6[0]:
            t.release(g, now=1.0)
    assert all(send(t, 100 + i).address == PODS6[0] for i in range(5))


def test_power_of_two_choices_is_reproducible_with_a_seeded_rng():
    picks = []
    for _ in range(2):
        t = throttler(0, PODS6, seed=42)
        picks.append([send(t, i).address for i in range(30)])
    assert picks[0] == picks[1]
    assert len(set(picks[0])) == 6


def test_cc_0_blocks_only_without_backends():
    t = throttler(0)
    assert send(t, "a") is Admission.QUEUED
    [grant] = t.update_backends([PODS6[0]], now=0.5)
    assert (grant.ticket, grant.address, grant.waited) == ("a", PODS6[0], 0.5)
    assert all(isinstance(send(t, i), Grant) for i in range(500))


def test_held_requests_are_admitted_fifo_the_moment_a_pod_becomes_healthy():
    t = throttler(1)
    assert [send(t, name, now=n) for n, name in enumerate("abc")] == [Admission.QUEUED] * 3
    admitted = t.update_backends([PODS6[0]], now=10.0)
    assert [(g.ticket, g.waited) for g in admitted] == [("a", 10.0)]
    admitted = t.release(admitted[0], now=11.0)
    assert [(g.ticket, g.waited) for g in admitted] == [("b", 10.0)]
    more = t.update_backends([PODS6[0], PODS6[1]], now=12.0)
    assert [(g.ticket, g.address) for g in more] == [("c", PODS6[1])]


@pytest.mark.parametrize(
    ("cc", "queue_bound", "pods", "held_before_reject"),
    [
        (1, 2, 0, 2),  # explicit bound
        (1, None, 0, 1000),  # default: at least 1000
        (10, None, 0, 1000),
        (200, None, 0, 2000),  # 10 × cc × max(1, pods)
    ],
    ids=["explicit-bound", "default-cc1", "default-cc10", "default-cc200"],
)
def test_wait_queue_is_bounded_and_rejects_at_once_past_the_bound(cc, queue_bound, pods, held_before_reject):
    t = throttler(cc, PODS6[:pods], queue_bound=queue_bound)
    outcomes = [send(t, i) for i in range(held_before_reject)]
    assert outcomes == [Admission.QUEUED] * held_before_reject
    assert send(t, "overflow") is Admission.REJECTED
    assert t.waiting == held_before_reject


def test_admitted_requests_do_not_count_against_the_queue_bound():
    t = throttler(1, PODS6[:2], queue_bound=1)
    assert isinstance(send(t, "a"), Grant)
    assert isinstance(send(t, "b"), Grant)
    assert send(t, "c") is Admission.QUEUED
    assert send(t, "d") is Admission.REJECTED


def test_waiters_past_their_deadline_expire_with_the_time_they_waited():
    t = throttler(1)
    send(t, "a", now=0.0, deadline=5.0)
    send(t, "b", now=1.0, deadline=6.0)
    send(t, "c", now=2.0, deadline=4.0)
    assert t.next_deadline() == 4.0
    assert t.expire(3.9) == []
    assert t.expire(5.0) == [Expired("c", 3.0), Expired("a", 5.0)]
    assert t.waiting == 1
    assert t.next_deadline() == 6.0
    [grant] = t.update_backends([PODS6[0]], now=5.5)
    assert grant.ticket == "b"
    assert t.next_deadline() is None
    assert t.expire(100.0) == []


def test_cancelled_waiter_leaves_the_queue_and_its_deadline():
    t = throttler(1)
    send(t, "a", deadline=1.0)
    send(t, "b", deadline=2.0)
    assert t.cancel("a") is True
    assert t.cancel("a") is False
    assert t.next_deadline() == 2.0
    assert [g.ticket for g in t.update_backends([PODS6[0]], now=0.5)] == ["b"]


def test_refused_request_is_retried_on_another_pod():
    t = throttler(1, PODS6[:2])
    grant = send(t, "a")
    assert grant.address == PODS6[0]
    t.update_backends([PODS6[1]], now=1.0)  # pod 0 refused: the prober distrusts it
    outcome, others = t.retry(grant, now=1.0, deadline=100.0)
    assert outcome.address == PODS6[1]
    assert others == []
    assert t.in_flight_at(PODS6[0]) == 0


def test_refused_request_is_held_again_when_no_other_pod_is_free_and_bypasses_the_bound():
    t = throttler(1, PODS6[:1], queue_bound=1)
    grant = send(t, "a")
    assert send(t, "b", now=0.5) is Admission.QUEUED  # the queue is now full
    t.update_backends([], now=1.0)
    outcome, others = t.retry(grant, now=1.0, deadline=100.0)
    assert (outcome, others) == (Admission.QUEUED, [])
    assert t.waiting == 2
    admitted = t.update_backends([PODS6[2]], now=3.0)
    assert [(g.ticket, g.waited) for g in admitted] == [("b", 2.5)]
    admitted = t.release(admitted[0], now=4.0)
    assert [(g.ticket, g.waited) for g in admitted] == [("a", 3.0)]  # waited 0 s, then 1 s → 4 s again


def test_pod_that_leaves_while_busy_keeps_its_count_when_it_returns():
    t = throttler(2, PODS6[:1])
    g1, g2 = send(t, 1), send(t, 2)
    t.update_backends([], now=1.0)
    assert send(t, 3) is Admission.QUEUED
    assert t.update_backends([PODS6[0]], now=2.0) == []  # both slots still busy on the pod
    [g3] = t.release(g1, now=3.0)
    assert (g3.ticket, t.in_flight_at(PODS6[0])) == (3, 2)
    t.release(g2, now=4.0)
    t.release(g3, now=4.0)
    assert t.in_flight_at(PODS6[0]) == 0


def _count_per_pod(live):
    per_pod: dict[str, int] = {}
    for _, grant in live:
        per_pod[grant.address] = per_pod.get(grant.address, 0) + 1
    return per_pod


@pytest.mark.parametrize("cc", [1, 2, 3])
def test_first_available_always_picks_the_first_pod_with_a_free_slot_as_a_full_scan_would(cc):
    """The heap of maybe-free pods must choose exactly what Knative's scan from the first pod chooses."""
    rng = random.Random(10 + cc)
    pods = [f"10.0.{i // 256}.{i % 256}:8012" for i in range(40)]
    t = throttler(cc, pods[:20])
    live: list[Grant] = []
    for step in range(4000):
        now = float(step)
        roll = rng.random()
        if roll < 0.55:
            in_use = {}
            for grant in live:
                in_use[grant.address] = in_use.get(grant.address, 0) + 1
            first_free = next((a for a in t.assigned if in_use.get(a, 0) < cc), None)
            outcome = send(t, step, now=now)
            if isinstance(outcome, Grant):
                assert outcome.address == first_free, step
                live.append(outcome)
            else:  # held: the revision's tokens are all out (a pod that left while busy still holds its own)
                assert t.executing >= t.capacity, step
        elif roll < 0.97 and live:
            live.extend(t.release(live.pop(rng.randrange(len(live))), now))
        else:
            live.extend(t.update_backends(rng.sample(pods, rng.randint(1, len(pods))), now))


@pytest.mark.parametrize("cc", [1, 2, 3, 5])
def test_random_traffic_and_pod_churn_never_exceed_cc_at_any_pod(cc):
    rng = random.Random(cc)
    t = throttler(cc, PODS6[:1])
    live: list[tuple[RevisionThrottler, Grant]] = []
    full = 0
    for step in range(3000):
        now = float(step)
        roll = rng.random()
        if roll < 0.5:
            outcome = send(t, step, now=now)
            if isinstance(outcome, Grant):
                live.append((t, outcome))
        elif roll < 0.93 and live:
            _, grant = live.pop(rng.randrange(len(live)))
            live.extend((t, g) for g in t.release(grant, now))
        else:
            healthy = rng.sample(PODS6, rng.randint(0, len(PODS6)))
            live.extend((t, g) for g in t.update_backends(healthy, now))
        per_pod = _count_per_pod(live)
        assert max(per_pod.values(), default=0) <= cc, step
        full += max(per_pod.values(), default=0) == cc
    assert full > 100


@pytest.mark.parametrize(
    ("cc", "pods", "activators"),
    named(
        [(1, 2, 2), (3, 5, 2), (5, 6, 4), (1, 6, 3)],
        lambda cc, pods, activators: f"cc{cc}-{pods}-pods-{activators}-activators",
    ),
)
def test_activator_replicas_sharing_pods_never_exceed_cc_at_any_pod(cc, pods, activators):
    rng = random.Random(cc * 100 + pods * 10 + activators)
    replicas = [throttler(cc, PODS6[:pods], slot=(i, activators), seed=i) for i in range(activators)]
    live: list[tuple[RevisionThrottler, Grant]] = []
    saturated = 0
    for step in range(3000):
        if rng.random() < 0.55:
            t = rng.choice(replicas)
            outcome = send(t, step, now=float(step))
            if isinstance(outcome, Grant):
                live.append((t, outcome))
        elif live:
            t, grant = live.pop(rng.randrange(len(live)))
            live.extend((t, g) for g in t.release(grant, float(step)))
        per_pod = _count_per_pod(live)
        assert max(per_pod.values(), default=0) <= cc, step
        saturated += sum(per_pod.values()) == cc * pods
    assert saturated > 100  # the replicas really ran every pod full
    assert sum(t.capacity for t in replicas) == cc * pods


def test_cc_change_applies_to_new_requests():
    t = throttler(1, PODS6[:1])
    old = send(t, "old")
    assert send(t, "x") is Admission.QUEUED
    admitted = t.reconfigure(3, None, now=1.0)
    assert [g.ticket for g in admitted] == ["x"]
    assert t.capacity == 3
    t.release(old, now=2.0)
    assert t.executing == 1
