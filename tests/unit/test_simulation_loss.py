"""Research scenarios Knative would not configure: ``queue_depth: 0``, a pure loss pod (Erlang B)."""

import pytest
from tables import named

from simulation.engine import Simulation
from simulation.queueing import mmck
from simulation.scenario import ScenarioError, parse_scenario
from simulation.validation import pinned


def loss_scenario(pods: int, cc: int, rate: float) -> dict:
    document = pinned(pods, cc, 0, rate, 0.1, 1500, 100)  # TBC 0: the activator leaves the path
    document["revision"]["queue_depth"] = 0
    return document


@pytest.mark.parametrize(
    ("label", "pods", "cc", "rate", "servers"),
    named(
        [
            # One pod, cc 8, no queue: M/M/8/8 — a request is lost only when all 8 slots are busy.
            ("one pod, cc 8 (M/M/8/8)", 1, 8, 60.0, 8),
            # Four pods of cc 1 behind random routing: each an M/M/1/1 with a quarter of the load.
            ("four pods, cc 1, random routing (4 x M/M/1/1)", 4, 1, 20.0, 1),
        ]
    ),
)
def test_queue_depth_zero_loses_requests_as_erlang_b_predicts(label, pods, cc, rate, servers):
    sim = Simulation(parse_scenario(loss_scenario(pods, cc, rate))).run()
    counters = sim.counters
    per_server_group = rate / pods if servers == 1 else rate
    theory = mmck(servers, servers, per_server_group, 10.0)  # M/M/c/c: p_block is Erlang B
    assert counters.rejected / counters.requests == pytest.approx(theory.p_block, abs=0.015)
    assert counters.waits.values().max() == 0  # nothing queues: served at once or answered 503
    assert counters.timed_out == 0


def test_queue_depth_zero_parses_and_negative_depth_names_the_key():
    assert parse_scenario(loss_scenario(1, 4, 1.0)).revision.queue_depth == 0
    document = loss_scenario(1, 4, 1.0)
    document["revision"]["queue_depth"] = -1
    with pytest.raises(ScenarioError, match=r"revision\.queue_depth=-1: .*>= 0"):
        parse_scenario(document)
