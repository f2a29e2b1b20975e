"""The local capacity cap: its default from the machine, and how it is shared among revisions."""

import pytest

from localbackend.capacity import POD_MEMORY_ESTIMATE, allot, default_max_pods, machine_resources

GIB = 1024**3


@pytest.mark.parametrize(
    ("cores", "memory", "expected"),
    [
        (2, 64 * GIB, 8),  # cores bound: 4 per core
        (16, 64 * GIB, 64),
        (16, 2 * GIB, 2 * GIB // POD_MEMORY_ESTIMATE),  # memory bound
        (8, None, 32),  # memory unknown: cores only
        (4, 0, 1),  # never below one pod
        (0, 64 * GIB, 4),  # a machine reporting no cores still counts as one
    ],
    ids=[
        "2-cores-64GiB",
        "16-cores-64GiB",
        "16-cores-2GiB-memory-bound",
        "memory-unknown",
        "no-memory",
        "no-cores",
    ],
)
def test_default_max_pods(cores, memory, expected):
    assert default_max_pods(cores, memory) == expected


@pytest.mark.parametrize(
    ("desired", "cap", "expected"),
    [
        ({"a": 3, "b": 2}, 10, {"a": 3, "b": 2}),  # under the cap: everyone gets what it wants
        ({"a": 100000}, 8, {"a": 8}),
        ({"a": 100000, "b": 2}, 8, {"a": 6, "b": 2}),  # the small one is not starved
        ({"a": 100000, "b": 100000}, 9, {"a": 4, "b": 5}),  # equal demands split, ties by key
        ({"a": 10, "b": 3, "c": 10}, 10, {"a": 3, "b": 3, "c": 4}),
        ({"a": 0, "b": 5}, 3, {"a": 0, "b": 3}),
        ({"a": -1, "b": 5}, 3, {"a": 0, "b": 3}),  # negative demands count as none
        ({}, 4, {}),
        ({"a": 5}, 0, {"a": 0}),
    ],
    ids=[
        "under-the-cap",
        "one-over",
        "small-one-not-starved",
        "equal-demands-split",
        "three-way",
        "zero-demand",
        "negative-demand",
        "nothing-desired",
        "zero-cap",
    ],
)
def test_allot_is_max_min_fair(desired, cap, expected):
    shares = allot(desired, cap)
    assert shares == expected
    assert sum(shares.values()) <= cap


def test_machine_resources_reads_this_machine():
    cores, memory = machine_resources()
    assert cores >= 1
    assert memory is None or memory > 0
