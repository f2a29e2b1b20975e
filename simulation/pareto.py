"""The sweep's Pareto frontier: the grid points no other point beats on both cost and tail latency.

A point (pod-seconds, p99) is *dominated* when another point costs no more and is no slower, and is
strictly better in one of the two. The frontier is every point not dominated: the settings worth
choosing between; any other point pays more for the same latency or waits longer for the same cost.

Defined edge cases (tests/unit/test_pareto.py):

* equal points (same cost and same p99) do not dominate each other: both are on the frontier, or
  both are off it when a third point beats them;
* a point with the same cost as another but a higher p99 (or the same p99 and a higher cost) is
  dominated;
* a point without a p99 (``None``: no request completed after the warm-up) or with a figure that is
  not a finite number (NaN, infinity) cannot be compared: it is never on the frontier and dominates
  nothing.
"""

from __future__ import annotations

import math
from collections.abc import Sequence


def comparable(cost: float, p99: float | None) -> bool:
    """Whether a point has both figures the frontier compares: a p99 at all, both finite."""
    return p99 is not None and math.isfinite(p99) and math.isfinite(cost)


def frontier(points: Sequence[tuple[float, float | None]]) -> list[bool]:
    """For each ``(cost, p99)`` point, whether it is on the Pareto frontier (both minimized).

    O(n log n): points sorted by cost, then p99; within one cost only the lowest p99 can be on the
    frontier, and only if it is strictly below every p99 of a cheaper point.
    """
    order = sorted(
        (i for i, (cost, p99) in enumerate(points) if comparable(cost, p99)),
        key=lambda i: (points[i][0], points[i][1]),
    )
    on = [False] * len(points)
    best = math.inf  # the lowest p99 among points strictly cheaper than the current cost
    start = 0
    while start < len(order):
        cost = points[order[start]][0]
        end = start
        while end < len(order) and points[order[end]][0] == cost:
            end += 1
        lowest = points[order[start]][1]
        assert lowest is not None  # comparable() kept only points with a p99
        if lowest < best:
            for i in order[start:end]:
                on[i] = points[i][1] == lowest
        best = min(best, lowest)
        start = end
    return on
