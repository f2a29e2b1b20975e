"""The simulated KPA path: queueing against closed forms, autoscaling timing, failures and accounting."""

import itertools

import numpy as np
import pytest

from simulation.engine import Simulation
from simulation.queueing import erlang_c, mmck
from simulation.report import summarize
from simulation.scenario import parse_scenario
from simulation.validation import dynamics, pinned, step_scenario

A = "autoscaling.knative.dev/"


def simulate(doc, seed=1):
    return Simulation(parse_scenario(doc), seed).run()


def test_activator_path_matches_erlang_c():
    sim = simulate(pinned(10, 1, -1, 80, 0.1, 1600, 100))
    theory = erlang_c(10, 80, 10)
    waits = sim.counters.waits.values()
    assert np.mean(waits > 0) == pytest.approx(theory.p_wait, abs=0.03)
    assert waits.mean() == pytest.approx(theory.mean_wait, rel=0.2)
    assert sim.counters.latencies.mean() == pytest.approx(theory.mean_response, rel=0.05)
    assert sim.counters.rejected == sim.counters.timed_out == 0


def test_random_routing_matches_independent_queue_proxies():
    sim = simulate(pinned(10, 1, 0, 120, 0.1, 1000, 100))
    theory = mmck(1, 11, 12, 10)
    assert sim.counters.rejected / sim.counters.requests == pytest.approx(theory.p_block, rel=0.1)
    assert sim.counters.latencies.mean() == pytest.approx(theory.mean_response, rel=0.05)


def test_shared_service_model_is_processor_sharing():
    sim = simulate(pinned(1, 0, 0, 3.0, 1.0, 6000, 100, service_model="shared", cores=4))
    assert sim.counters.latencies.mean() == pytest.approx(erlang_c(4, 3.0, 1.0).mean_response, rel=0.06)
    assert sim.counters.waits.values().max() == 0  # processor sharing: nobody queues, everybody slows down


@pytest.mark.parametrize(
    ("cc", "tbc", "rate", "service", "cold"),
    [(1, -1, 20.0, 0.5, 3.0), (1, 0, 20.0, 0.5, 3.0), (10, 211, 100.0, 0.2, 5.0)],
    ids=["tbc-1", "tbc0", "tbc211"],
)
def test_step_from_zero_reaches_needed_pods_within_two_ticks_then_scales_to_zero(
    cc, tbc, rate, service, cold
):
    d = dynamics(step_scenario(cc, tbc, rate, service, cold))
    assert d.desired_at - d.first_request <= 4  # poke, then at most one 2 s tick after the first report
    assert d.ready_at - d.first_request <= 4 + cold
    zero_after = d.zero_at - d.last_request
    assert d.expected_zero_after <= zero_after <= d.latest_zero_after


def test_scale_to_zero_waits_stable_window_plus_grace_when_activator_was_out_of_path():
    d = dynamics(step_scenario(1, 0, 20.0, 0.5, 3.0))
    assert d.expected_zero_after == d.stable_window + d.grace_period  # served directly until the end
    assert d.zero_at - d.last_request >= 90


def test_panic_never_scales_down():
    sim = simulate(step_scenario(1, -1, 30.0, 0.5, 2.0))
    rows = sim.timeline
    for before, after in itertools.pairwise(rows):
        if before.panicking and after.panicking:
            assert after.desired_pods >= before.desired_pods


def test_full_queue_proxy_answers_503_and_never_holds_more_than_eleven_cc():
    doc = pinned(1, 2, 0, 40, 0.5, 60, 10)  # one pod, cc 2: capacity 4 req/s against 40 req/s
    sim = Simulation(parse_scenario(doc), 1)
    peak = []
    sim.env.process(_watch(sim, peak))
    sim.run()
    assert sim.counters.rejected > 0.8 * sim.counters.requests
    assert max(peak) == 22  # 2 executing + 20 queued


def _watch(sim, peak):
    while True:
        peak.append(max((pod.in_flight for pod in sim.ready), default=0))
        yield sim.env.timeout(0.05)


def test_requests_waiting_past_the_revision_timeout_get_504():
    doc = pinned(1, 1, -1, 20, 0.1, 60, 0)
    doc["revision"]["timeout"] = 5
    sim = simulate(doc)
    assert sim.counters.timed_out > 0.5 * sim.counters.requests
    assert sim.counters.latencies.values().max() <= 5.0 + 1e-9
    assert sim.counters.requests == sim.counters.completed + sim.counters.timed_out + sim.counters.rejected


def test_draining_pods_finish_what_they_hold():
    doc = step_scenario(1, 0, 10.0, 4.0, 1.0, idle=120, busy=60)  # 4 s requests, then scale down
    sim = simulate(doc)
    assert sim.counters.completed == sim.counters.requests
    assert all(pod.in_flight == 0 for pod in sim.fleet.pods)
    lives = sim.fleet.lives()
    assert any(life.unready_at is not None and life.gone_at is not None for life in lives)


def test_pinned_pods_cost_pods_times_seconds():
    report = summarize(simulate(pinned(4, 1, 0, 10, 0.1, 300, 100)))
    assert report["pod_seconds"] == pytest.approx(4 * 200)
    assert report["ready_pods"] == {"mean": pytest.approx(4.0), "max": 4}
    assert report["scale_events"] == 0


def test_warmup_leaves_early_requests_out():
    doc = pinned(2, 1, 0, 10, 0.1, 200, 150)
    sim = simulate(doc)
    assert sim.counters.requests == sum(row.arrivals for row in sim.timeline[150:])
    assert sim.arrivals > sim.counters.requests


def test_same_seed_same_run_other_seed_other_run():
    doc = step_scenario(1, 211, 15.0, 0.3, 2.0)
    doc["workload"][1]["type"] = "poisson"  # constant arrivals and service would leave nothing to chance
    first, again, other = (summarize(simulate(doc, seed)) for seed in (5, 5, 6))
    for key in ("requests", "latency", "pod_seconds", "scale_events"):
        assert first[key] == again[key]
    assert first["latency"] != other["latency"]


def test_round_robin_spreads_requests_evenly():
    doc = pinned(3, 0, 0, 30, 0.05, 100, 0)
    doc["revision"]["routing"] = "round_robin"
    sim = Simulation(parse_scenario(doc), 1)
    before = {}
    sim.env.process(_snapshot_after_start(sim, before))  # the first pod serves alone until the others are up
    sim.run()
    served = [pod.accepted - before[pod.name] for pod in sim.ready]
    assert len(served) == 3 and min(served) > 500
    assert max(served) - min(served) <= 1


def _snapshot_after_start(sim, before):
    yield sim.env.timeout(10)
    before.update({pod.name: pod.accepted for pod in sim.ready})


class RecordingAutoscaler:
    """Wraps the simulation's RevisionAutoscaler and notes when it decides and when it only reconciles."""

    def __init__(self, core):
        self._core = core
        self.decided: list[float] = []
        self.reconciled: list[float] = []

    def __getattr__(self, name):
        return getattr(self._core, name)

    def decide(self, now, *args, **kwargs):
        self.decided.append(now)
        return self._core.decide(now, *args, **kwargs)

    def reconcile(self, now, *args, **kwargs):
        self.reconciled.append(now)
        return self._core.reconcile(now, *args, **kwargs)


def test_the_simulator_decides_on_the_schedule_ticks_pokes_and_requeues():
    """autoscaler.schedule's policy, as the live service follows it: the decider on every even second
    and at once on a poke (the activator's first stat of a burst), the reconciler alone on requeues
    between ticks (here the short grace and retention periods)."""
    doc = {
        "duration": 200,
        "revision": {
            "container_concurrency": 2,
            "service_time": {"dist": "exponential", "mean": 0.3},
            "cold_start": {"dist": "constant", "value": 1.3},
            "annotations": {
                A + "initial-scale": "0",
                A + "target-burst-capacity": "0",
                A + "scale-to-zero-pod-retention-period": "1.5s",
            },
        },
        "config": {
            "stable-window": "7s",
            "allow-zero-initial-scale": "true",
            "scale-to-zero-grace-period": "3s",
        },
        "platform": {"actuation_delay": 0.3, "drain_period": 0.7},
        "workload": [{"type": "on_off", "rate": 15, "on": 9, "off": 23, "duration": 200}],
    }
    sim = Simulation(parse_scenario(doc), 1)
    sim.autoscaler = recording = RecordingAutoscaler(sim.autoscaler)
    sim.run()
    ticks = [now for now in recording.decided if now == int(now) and int(now) % 2 == 0]
    pokes = [now for now in recording.decided if now not in ticks]
    assert ticks == [float(second) for second in range(2, 201, 2)]  # every tick, each once
    assert len(pokes) >= 5  # the first request of each burst after a scale to zero
    assert recording.reconciled, "the short grace and retention periods must requeue between ticks"
    assert all(now % 2 != 0 for now in recording.reconciled)  # a requeue never lands on a tick


class _Served(Simulation):
    """Records each completed request: (arrival, its drawn service time, the time it was served)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.served: dict[float, tuple[float, float]] = {}

    def completed(self, request, now: float) -> None:
        self.served[request.arrival] = (request.work, now - request.start)
        super().completed(request, now)


@pytest.mark.parametrize("service_model", ["parallel", "shared"])
def test_every_policy_serves_each_request_for_the_same_drawn_time(service_model):
    """Common random numbers for `kpa compare`: the n-th arrival gets the n-th service draw whatever the
    policy does, so a policy changes where and when a request is served, never for how long."""
    doc = {
        "duration": 600,
        "seed": 5,
        "revision": {
            "container_concurrency": 1,
            "service_model": service_model,
            **({"cores": 8} if service_model == "shared" else {}),
            "service_time": {"dist": "exponential", "mean": 0.2},
            "cold_start": {"dist": "constant", "value": 1.0},
        },
        "workload": [{"type": "on_off", "rate": 6, "on": 60, "off": 120, "duration": 600}],
    }
    runs = {policy: _Served(parse_scenario({**doc, "policy": policy}), 5) for policy in ("kpa", "hpa")}
    for run in runs.values():
        run.run()
    kpa, hpa = runs["kpa"].served, runs["hpa"].served
    both = kpa.keys() & hpa.keys()
    assert len(both) > 1000
    assert all(kpa[at][0] == hpa[at][0] for at in both)  # the same draw for the same arrival
    if service_model == "parallel":  # alone on its pod: served for exactly its draw
        assert all(work == pytest.approx(took) for work, took in kpa.values())
