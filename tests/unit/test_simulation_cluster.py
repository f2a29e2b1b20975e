"""The cluster's scheduling model: first fit by requests, FIFO pending, room freed by pods that leave."""

import pytest
from tables import named

from simulation.cluster import Cluster, Resources

NODE = Resources(cpu=2000, memory=4096)
SMALL, BIG = Resources(500, 1024), Resources(2000, 1024)


def test_pods_go_to_the_first_node_that_fits():
    cluster: Cluster[str] = Cluster([NODE, NODE])
    assert cluster.submit("a", BIG) and cluster.node_of("a") == 0
    assert cluster.submit("b", SMALL) and cluster.node_of("b") == 1  # node 0 has no CPU left
    assert cluster.submit("c", SMALL) and cluster.node_of("c") == 1


@pytest.mark.parametrize(
    ("label", "first", "then", "placed_after_a_leaves"),
    named(
        [
            ("the oldest pending pod takes the room first", [BIG, BIG], [], ["p0"]),
            ("a younger pod that fits goes ahead of an older one that does not", [BIG], [SMALL], ["p0"]),
        ]
    ),
)
def test_pending_pods_are_placed_oldest_first_when_room_frees(label, first, then, placed_after_a_leaves):
    cluster: Cluster[str] = Cluster([NODE])
    assert cluster.submit("a", BIG)
    for i, requests in enumerate(first + then):
        assert not cluster.submit(f"p{i}", requests)
    assert cluster.pending == len(first + then)
    assert cluster.remove("a") == placed_after_a_leaves
    assert cluster.pending == len(first + then) - len(placed_after_a_leaves)


def test_a_smaller_pod_fills_room_a_bigger_older_one_cannot_use():
    cluster: Cluster[str] = Cluster([NODE])
    assert cluster.submit("a", SMALL) and cluster.submit("b", Resources(1500, 1024))
    assert not cluster.submit("big", BIG) and not cluster.submit("small", SMALL)
    assert cluster.remove("a") == ["small"]  # big still does not fit: 500 m free
    assert cluster.remove("b") == []  # 1500 m free: still short of 2000
    assert cluster.remove("small") == ["big"]


def test_a_pod_scaled_away_while_pending_leaves_the_queue_and_frees_nothing():
    cluster: Cluster[str] = Cluster([NODE])
    assert cluster.submit("a", BIG) and not cluster.submit("p", BIG)
    assert cluster.remove("p") == [] and cluster.pending == 0
    assert cluster.remove("a") == [] and cluster.placed == 0
    assert cluster.submit("again", BIG)  # the whole node is free again, exactly


def test_fits_anywhere_and_bad_input():
    cluster: Cluster[str] = Cluster([NODE, Resources(8000, 1024)])
    assert cluster.fits_anywhere(Resources(8000, 1024)) and not cluster.fits_anywhere(Resources(8000, 2048))
    cluster.submit("a", SMALL)
    with pytest.raises(ValueError, match="submitted twice"):
        cluster.submit("a", SMALL)
    with pytest.raises(ValueError, match="at least one node"):
        Cluster([])
