"""When one revision decides and when it only reconciles: Knative's tick, poke and requeue, as one policy.

Knative runs a revision's autoscaler on three triggers (pkg/autoscaler/scaling/multiscaler.go and the
PodAutoscaler reconciler, pkg/reconciler/autoscaling/kpa):

* **tick** — a ticker runs the decider every 2 s (``tickInterval``). Its phase is fixed when the
  revision's decider starts; nothing else moves it.
* **poke** — a *pushed* stat (the activator's) runs the decider at once when the revision's desired
  scale is 0 (``MultiScaler.Poke``) — here also while it is still unknown (-1, see :func:`pokes`).
  Scraped stats only fill the windows: they never poke.
* **requeue** — the reconciler asks to look again after ``requeue_after`` (scale-to-zero grace
  periods, the activator probe); that, like a change of the revision's pods, re-runs only the
  reconciler on the decider's last result (``RevisionAutoscaler.reconcile``), never the decider.
  A requeue due at or after the next tick is dropped: the tick reconciles anyway.

The live service (asyncio timers, ``autoscaler/service.py``) and the simulator (simpy events,
``simulation/engine.py``) both ask a :class:`DecisionSchedule` what is due and differ only in how they
wait for it, so a simulated revision decides at the times the live one does.

Pure: no clock, no I/O. ``now`` is any clock's seconds, the same clock for all of one schedule's calls.
"""

from __future__ import annotations

import math

from autoscaler.scaling import TICK_INTERVAL
from autoscaler.stat import Stat

__all__ = ["EPSILON", "DecisionSchedule", "pokes"]

EPSILON = 1e-9  # seconds of float slack: a tick at 4.0 reached as 3.9999999999 is due


def pokes(desired_scale: int, stat: Stat) -> bool:
    """True when the pushed ``stat`` should run the decider now rather than at the next tick.

    Knative pokes when the last desired scale is 0 and the stat carries concurrency: the scale-from-zero
    path. Here a desired scale still unknown (-1: a revision that has not decided yet, with initial scale
    0, just created or just restarted) pokes too; Knative would hold that first request until the next
    2 s tick. Deciding at once costs one early decision and serves it as fast as any later cold start.
    """
    return desired_scale <= 0 and stat.average_concurrent_requests != 0


class DecisionSchedule:
    """One revision's decision times: ticks every ``interval`` from ``start``, requeues in between.

    The caller waits until :meth:`wake_at` (or an event), then asks :meth:`tick_due` (run the decider)
    and :meth:`requeue_due` (run the reconciler), and hands each result's ``requeue_after`` to
    :meth:`requeue`. A poke is not scheduled: the caller decides at once and the ticks keep their phase.
    """

    __slots__ = ("_interval", "_next_tick", "_requeue_at", "_start")

    def __init__(self, start: float, interval: float = TICK_INTERVAL) -> None:
        if not interval > 0 or math.isinf(interval):
            raise ValueError(f"decision interval {interval!r}: must be a positive, finite number of seconds")
        self._start = start
        self._interval = interval
        self._next_tick = start + interval
        self._requeue_at = math.inf

    def next_tick(self, now: float) -> float:
        """The first tick after ``now``; a tick at ``now`` itself counts as passed."""
        start, interval = self._start, self._interval
        return start + (math.floor((now - start) / interval + EPSILON) + 1) * interval

    def tick_due(self, now: float) -> bool:
        """True once per tick reached: run the decider.

        A caller that is late by more than an interval gets one tick, not a backlog (Go's ticker drops
        the ticks a slow receiver missed), and the next one stays on the grid.
        """
        if now < self._next_tick - EPSILON:
            return False
        self._next_tick = self.next_tick(now)
        return True

    def requeue(self, now: float, after: float | None) -> bool:
        """The reconciler asks to look again ``after`` seconds from ``now`` (None or <= 0: it does not).

        True when that look is now the earliest pending one and comes before the next tick: the caller
        sets a timer for it. The earliest request wins, as in Knative's work queue.
        """
        if after is None or after <= 0:
            return False
        at = now + after
        if at < self.next_tick(now) - EPSILON and at < self._requeue_at:
            self._requeue_at = at
            return True
        return False

    def requeue_due(self, now: float) -> bool:
        """True once when the pending requeue's time has come: run the reconciler."""
        if now < self._requeue_at - EPSILON:
            return False
        self._requeue_at = math.inf
        return True

    def wake_at(self) -> float:
        """The earliest time something is due: the next tick or the pending requeue."""
        return min(self._next_tick, self._requeue_at)
