"""`kpa validate`: a short scenario run live on the local stack (real processes) and simulated."""

import json
import subprocess
import sys

import pytest
import yaml

from kpa.validate import aggregate, simulate_replicates, stack_yaml, unsupported
from localbackend.stack_file import parse_stack
from simulation.scenario import parse_scenario

SCENARIO = """\
duration: 20
seed: 2
revision:
  container_concurrency: 2
  service_time: {dist: constant, value: 0.1}
  cold_start: {dist: constant, value: 0.5}
  timeout: 30
  annotations: {"autoscaling.knative.dev/target-burst-capacity": "0"}
config: {"stable-window": "6s", "scale-to-zero-grace-period": "1s"}
workload:
  - {type: constant, rate: 8, duration: 12}
  - {type: poisson, rate: 0, duration: 8}
"""


def test_validate_runs_the_scenario_live_and_simulated(tmp_path):
    path = tmp_path / "scenario.yaml"
    path.write_text(SCENARIO)
    result = subprocess.run(
        [sys.executable, "-m", "kpa", "validate", str(path), "--out", str(tmp_path / "out"),
         "--replicates", "3"],
        capture_output=True, text=True, timeout=90,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    doc = json.loads((tmp_path / "out" / "validate.json").read_text())
    live, simulated = doc["live"], doc["simulated"]
    assert live["requests"] == simulated["requests"] == 96  # the same arrival times on both sides
    assert doc["replicates"] == 3
    low, high = doc["simulated_range"]["latency_p95"]
    assert low <= simulated["latency_p95"] <= high
    assert live["failed"] == simulated["failed"] == 0
    assert live["ready_pods_max"] >= 1 and simulated["ready_pods_max"] >= 1
    # 0.1 s of service plus a proxy hop or two on loopback: the live median cannot be far off.
    assert simulated["latency_p50"] == pytest.approx(0.1, abs=0.01)
    assert 0.1 <= live["latency_p50"] < 0.5
    assert set(doc["difference"]) >= {"latency_p50", "latency_p95", "pod_seconds", "cold_start_requests"}
    assert (tmp_path / "out" / "comparison.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ("  service_model: shared\n", "revision.service_model"),
        ("  queue_depth: 5\n", "revision.queue_depth"),
    ],
    ids=["shared-service-model", "queue-depth"],
)
def test_validate_refuses_what_the_live_stack_cannot_reproduce(change, problem):
    doc = yaml.safe_load(SCENARIO.replace("revision:\n", "revision:\n" + change))
    assert any(p.startswith(problem) for p in unsupported(parse_scenario(doc)))


@pytest.mark.parametrize(
    ("annotations", "max_pods"),
    [({"max-scale": "8"}, 10), ({}, None)],
    ids=["max-scale-8-gets-room-for-2-draining", "no-max-scale-no-cap"],
)
def test_the_live_stack_leaves_draining_pods_room_above_the_scenarios_max_scale(annotations, max_pods):
    """kpa up's capacity cap counts draining pods; the simulator has no cap, so the live run gets room."""
    doc = yaml.safe_load(SCENARIO)
    doc["revision"]["annotations"].update({f"autoscaling.knative.dev/{k}": v for k, v in annotations.items()})
    stack = parse_stack(stack_yaml(parse_scenario(doc), 1), "<validate>")
    assert stack.max_pods == max_pods


def test_every_replicate_replays_the_given_arrivals_and_draws_the_rest_anew():
    exponential = SCENARIO.replace("constant, value: 0.1", "exponential, mean: 0.1")
    scenario = parse_scenario(yaml.safe_load(exponential))
    arrivals = [0.5 + 0.25 * i for i in range(40)]  # not what the scenario's own workload would draw
    sims = simulate_replicates(scenario, arrivals, seed=7, replicates=3)
    assert [sim.arrivals for sim in sims] == [40, 40, 40]
    assert all(sim.scenario.revision.routing == "round_robin" for sim in sims)  # what kpa up does
    assert all(sim.timeline[1].arrivals == 4 for sim in sims)  # 1.0, 1.25, 1.5, 1.75
    latencies = [tuple(sim.counters.latencies.values()) for sim in sims]
    assert len(set(latencies)) == 3  # service times differ between replicates


def test_aggregate_gives_the_mean_and_the_range_and_keeps_figures_every_replicate_agrees_on():
    mean, spread = aggregate(
        [{"requests": 10, "p95": 1.0, "p50": None}, {"requests": 10, "p95": 3.0, "p50": None}]
    )
    assert mean == {"requests": 10, "p95": 2.0, "p50": None}
    assert spread == {"requests": (10, 10), "p95": (1.0, 3.0)}


def test_replicates_must_be_a_positive_whole_number(tmp_path):
    path = tmp_path / "scenario.yaml"
    path.write_text(SCENARIO)
    result = subprocess.run(
        [sys.executable, "-m", "kpa", "validate", str(path), "--out", str(tmp_path), "--replicates", "0"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2 and "--replicates" in result.stderr and "at least 1" in result.stderr
