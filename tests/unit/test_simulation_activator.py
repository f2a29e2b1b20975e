"""The simulated activator runs the live throttler: its queue bound, load-balancing and accounting."""

from simulation.engine import Simulation
from simulation.scenario import parse_scenario
from simulation.validation import pinned


def run(doc, seed=1, after=None):
    """Run ``doc``; with ``after`` also return each ready pod's accepted count since that second."""
    sim = Simulation(parse_scenario(doc), seed)
    before = {}
    if after is not None:
        sim.env.process(_snapshot(sim, after, before))
    sim.run()
    return sim, {pod.name: pod.accepted - before.get(pod.name, 0) for pod in sim.ready}


def _snapshot(sim, at, before):
    yield sim.env.timeout(at)
    before.update({pod.name: pod.accepted for pod in sim.ready})


def test_activator_queue_past_its_depth_answers_503_and_keeps_the_rest():
    doc = {
        "duration": 2,
        "platform": {"activator_queue_depth": 5},
        "revision": {
            "container_concurrency": 1,
            "service_time": {"dist": "constant", "value": 0.1},
            "cold_start": {"dist": "constant", "value": 10.0},
        },
        "workload": [{"type": "constant", "rate": 10, "duration": 2}],
    }
    sim, _ = run(doc)
    assert sim.counters.requests == 20  # all arrive while the first pod is still starting
    assert sim.counters.rejected == 15
    assert sim.counters.completed == 5
    assert sim.counters.cold == 5  # a 503 at once never waited for a pod
    assert sim.activator.waiting == 0


def test_first_available_packs_requests_onto_the_first_pods_for_small_cc():
    _, served = run(pinned(6, 1, -1, 5, 0.1, 300, 0), after=10)
    by_address = [served[name] for name in sorted(served)]
    assert len(by_address) == 6
    assert by_address == sorted(by_address, reverse=True)
    assert by_address[0] > sum(by_address) / 2
    assert by_address[-1] < by_address[0] / 20


def test_round_robin_spreads_requests_evenly_above_cc_three():
    _, served = run(pinned(4, 10, -1, 40, 0.1, 200, 0), after=10)
    assert len(served) == 4 and min(served.values()) > 1500
    assert max(served.values()) - min(served.values()) <= 1


def test_two_random_choices_balance_unlimited_concurrency():
    sim, served = run(pinned(4, 0, -1, 40, 0.1, 200, 0), after=10)
    total = sum(served.values())
    assert len(served) == 4
    assert all(0.2 * total < count < 0.3 * total for count in served.values())
    assert sim.counters.completed == sim.counters.requests


def test_waiters_time_out_in_order_and_free_their_places():
    doc = pinned(1, 1, -1, 20, 0.1, 60, 0)  # one cc-1 pod at 10 req/s capacity against 20 req/s
    doc["revision"]["timeout"] = 3
    sim, _ = run(doc)
    counters = sim.counters
    assert counters.timed_out > 0.4 * counters.requests
    assert counters.requests == counters.completed + counters.timed_out + counters.rejected
    assert counters.latencies.values().max() <= 3.0 + 1e-9
    assert sim.activator.waiting == 0 and sim.outstanding == 0
