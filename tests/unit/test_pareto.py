"""The sweep's Pareto frontier (simulation/pareto.py): which grid points are worth choosing between.

Both figures are minimized; a point is off the frontier only when another is no worse on both and
better on one. Edge cases are defined here: equal points, equal costs, points without a p99.
"""

import math

import pytest
from tables import named

from simulation.pareto import frontier

NAN, INF = math.nan, math.inf

CASES = [
    ("no points", [], []),
    ("one point is the frontier", [(10.0, 1.0)], [True]),
    ("cheaper and faster dominates", [(10.0, 1.0), (20.0, 2.0)], [True, False]),
    ("a trade-off keeps both", [(10.0, 2.0), (20.0, 1.0)], [True, True]),
    ("order of the input does not matter", [(20.0, 1.0), (30.0, 3.0), (10.0, 2.0)], [True, False, True]),
    ("equal points are both on it", [(10.0, 1.0), (10.0, 1.0)], [True, True]),
    ("equal points are both off it when a third beats them", [(10.0, 2.0), (10.0, 2.0), (5.0, 1.0)],
     [False, False, True]),
    ("same cost, higher p99 is dominated", [(10.0, 1.0), (10.0, 1.5)], [True, False]),
    ("same p99, higher cost is dominated", [(10.0, 1.0), (12.0, 1.0)], [True, False]),
    ("a cheaper point with the same p99 as the group minimum dominates it",
     [(5.0, 1.0), (10.0, 1.0), (10.0, 1.0)], [True, False, False]),
    ("no p99 (nothing completed) is never on it and dominates nothing",
     [(1.0, None), (10.0, 2.0)], [False, True]),
    ("NaN p99 is treated like no p99", [(1.0, NAN), (10.0, 2.0)], [False, True]),
    ("a NaN or infinite figure is not compared", [(NAN, 1.0), (INF, 0.5), (10.0, INF), (20.0, 2.0)],
     [False, False, False, True]),
    ("only points without a p99: empty frontier", [(1.0, None), (2.0, NAN)], [False, False]),
    ("zero cost and zero latency are ordinary values", [(0.0, 0.0), (0.0, 1.0), (1.0, 0.0)],
     [True, False, False]),
    ("a staircase of trade-offs with one point behind it",
     [(1.0, 9.0), (2.0, 5.0), (3.0, 6.0), (4.0, 2.0), (8.0, 1.0)], [True, True, False, True, True]),
]  # fmt: skip


@pytest.mark.parametrize("label, points, expected", named(CASES))
def test_frontier(label, points, expected):
    assert frontier(points) == expected


def test_a_large_grid_is_fast_and_agrees_with_the_definition():
    """10,000 cells (the sweep's limit) in well under a second, and every mark as the definition says."""
    points = [((i * 7919) % 1000 / 10, (i * 104729) % 997 / 100) for i in range(10_000)]
    marks = frontier(points)
    sample = range(0, 10_000, 97)
    for i in sample:
        cost, p99 = points[i]
        dominated = any(c <= cost and p <= p99 and (c < cost or p < p99) for c, p in points)
        assert marks[i] is not dominated, (i, points[i])
