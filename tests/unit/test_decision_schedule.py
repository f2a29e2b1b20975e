"""autoscaler.schedule: when a revision decides (tick, poke) and when it only reconciles (requeue).

The live service and the simulator both follow this policy, so each row here is a timing both of
them have: Knative's 2 s ticker with a fixed phase, the poke of a pushed stat, and the reconciler's
requeue, which counts only when it comes before the next tick and the earliest pending one wins.
"""

import math

import pytest

from autoscaler.schedule import DecisionSchedule, pokes
from autoscaler.stat import Stat

T0 = 1_000_000.0  # any clock: unix seconds live, 0 in a simulation


def concurrency(value: float) -> Stat:
    return Stat("activator", average_concurrent_requests=value, request_count=3.0)


@pytest.mark.parametrize(
    ("desired_scale", "stat_concurrency", "poke"),
    [
        pytest.param(0, 1.0, True, id="at zero with a request waiting: scale from zero now (Knative's Poke)"),
        pytest.param(-1, 1.0, True, id="not decided yet: the first request waits for no tick (ours)"),
        pytest.param(-1, 0.5, True, id="any concurrency at all"),
        pytest.param(0, 0.0, False, id="requests counted but none in flight: nothing to wake up for"),
        pytest.param(1, 5.0, False, id="pods wanted already: the tick decides"),
        pytest.param(3, 40.0, False, id="scaled up and busy: the tick decides"),
    ],
)
def test_a_pushed_stat_pokes_only_a_revision_at_zero_or_undecided_with_concurrency(
    desired_scale, stat_concurrency, poke
):
    assert pokes(desired_scale, concurrency(stat_concurrency)) is poke


@pytest.mark.parametrize(
    ("calls", "due"),
    [
        pytest.param([0.0, 1.0, 1.999], [False, False, False], id="nothing before the first interval"),
        pytest.param([2.0, 3.0, 4.0, 6.0], [True, False, True, True], id="every 2 s on the grid"),
        pytest.param([2.0, 2.0, 2.5], [True, False, False], id="once per tick, however often asked"),
        pytest.param([2.0 - 1e-10], [True], id="float slack: a tick reached a hair early is due"),
        pytest.param([2.3, 4.0, 4.1], [True, True, False], id="a late caller keeps the grid: next at 4"),
        pytest.param([9.7, 10.0], [True, True], id="a caller late by several ticks gets one, not a backlog"),
    ],
)
def test_ticks_fall_on_a_fixed_grid_from_the_start(calls, due):
    schedule = DecisionSchedule(T0)
    assert [schedule.tick_due(T0 + at) for at in calls] == due


def test_a_poke_does_not_move_the_tick_phase():
    """Knative's Poke runs the decider beside the ticker; the ticker keeps its phase."""
    schedule = DecisionSchedule(T0)
    assert schedule.tick_due(T0 + 2.0)
    # a poke at T0 + 3.9 decides at once; the schedule is not told, and the tick at 4 still comes
    assert schedule.wake_at() == T0 + 4.0
    assert schedule.tick_due(T0 + 4.0)


@pytest.mark.parametrize(
    ("now", "after", "accepted", "wake_at"),
    [
        pytest.param(2.0, 1.0, True, 3.0, id="before the next tick: a timer at 3"),
        pytest.param(2.5, 1.2, True, 3.7, id="between ticks: a timer at 3.7"),
        pytest.param(2.0, 2.0, False, 4.0, id="at the next tick: the tick reconciles anyway"),
        pytest.param(2.0, 30.0, False, 4.0, id="after the next tick: dropped"),
        pytest.param(2.0, None, False, 4.0, id="no requeue asked"),
        pytest.param(2.0, 0.0, False, 4.0, id="zero: no requeue"),
        pytest.param(2.0, -1.0, False, 4.0, id="negative: no requeue"),
    ],
)
def test_a_requeue_counts_only_before_the_next_tick(now, after, accepted, wake_at):
    schedule = DecisionSchedule(T0)
    assert schedule.tick_due(T0 + 2.0)
    assert schedule.requeue(T0 + now, after) is accepted
    assert schedule.wake_at() == T0 + wake_at


def test_the_earliest_pending_requeue_wins():
    schedule = DecisionSchedule(0.0)
    assert schedule.requeue(0.0, 1.5)
    assert not schedule.requeue(0.2, 1.5)  # 1.7 is later than the pending 1.5: no new timer
    assert schedule.requeue(0.4, 0.6)  # 1.0 is earlier: a new timer
    assert schedule.wake_at() == 1.0
    assert not schedule.requeue_due(0.9)
    assert schedule.requeue_due(1.0)
    assert not schedule.requeue_due(1.5)  # the earlier timer's time is not due twice
    assert schedule.wake_at() == 2.0


def test_a_requeue_is_due_once():
    schedule = DecisionSchedule(0.0)
    schedule.requeue(0.5, 1.0)
    assert [schedule.requeue_due(at) for at in (1.4, 1.5, 1.7, 1.9)] == [False, True, False, False]


def test_the_next_tick_after_a_time_on_the_grid_is_one_interval_later():
    schedule = DecisionSchedule(0.0, interval=2.0)
    assert [schedule.next_tick(now) for now in (0.0, 1.0, 2.0, 3.999, 4.0)] == [2.0, 2.0, 4.0, 4.0, 6.0]


def test_a_custom_interval_spaces_the_ticks():
    schedule = DecisionSchedule(10.0, interval=0.5)
    assert [schedule.tick_due(at) for at in (10.4, 10.5, 10.9, 11.0)] == [False, True, False, True]


@pytest.mark.parametrize("interval", [0.0, -2.0, math.inf, math.nan], ids=repr)
def test_an_interval_that_is_not_a_positive_time_is_refused_naming_it(interval):
    with pytest.raises(ValueError, match=rf"decision interval {interval!r}: must be a positive, finite"):
        DecisionSchedule(0.0, interval)
