"""Arrival processes and service-time distributions: the numbers users put in are the numbers they get."""

import math
from pathlib import Path

import numpy as np
import pytest

from simulation.distributions import parse_distribution
from simulation.schema import Node, ScenarioError
from simulation.workloads import load_trace, parse_workload

REPO_TRACE = Path(__file__).parents[2] / "examples/data/azure2019/busiest_function_inv.csv"


@pytest.fixture(scope="module")
def trace(tmp_path_factory) -> Path:
    """A 200-function, 20-minute file in the Azure 2019 ``*_inv.csv`` layout, with fixed random counts."""
    rng = np.random.default_rng(2019)
    minutes = [f"minute_{m}" for m in range(1, 21)]
    lines = [",".join(["HashFunction", "HashApp", "HashOwner", *minutes])]
    for row in range(200):
        counts = rng.poisson(rng.uniform(0, 300), size=len(minutes))
        lines.append(",".join([f"{row:04x}{'f' * 60}", "app", "owner", *map(str, counts)]))
    path = tmp_path_factory.mktemp("azure") / "200_inv.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


def workload_of(phases):
    return parse_workload(Node.of({"workload": phases}, ""), "workload", Path("."))


def arrivals(phases, seed=7):
    workload = workload_of(phases)
    blocks = list(workload.arrivals(np.random.default_rng(seed)))
    return workload, np.concatenate(blocks) if blocks else np.array([])


@pytest.mark.parametrize(
    "phase",
    [
        {"type": "poisson", "rate": 50, "duration": 200},
        {"type": "step", "from": 10, "to": 80, "at": 50, "duration": 200},
        {"type": "ramp", "from": 0, "to": 100, "duration": 200},
        {"type": "burst", "base": 5, "rate": 200, "every": 20, "length": 2, "duration": 200},
        {"type": "sinusoid", "mean": 40, "amplitude": 30, "period": 100, "duration": 200},
        {"type": "on_off", "rate": 60, "on": 10, "off": 30, "duration": 200},
    ],
    ids=lambda p: p["type"],
)
def test_poisson_phases_deliver_their_expected_count(phase):
    workload, times = arrivals([phase])
    expected = workload.expected_requests(math.inf)
    assert abs(times.size - expected) < 4.5 * math.sqrt(expected)  # Poisson: sd = sqrt(mean)
    assert np.all(np.diff(times) >= 0)
    assert times.min() >= 0 and times.max() < phase["duration"]


def test_step_sends_nothing_before_the_step_from_zero():
    _, times = arrivals([{"type": "step", "to": 100, "at": 30, "duration": 60}])
    assert times.min() >= 30


def test_on_off_is_silent_while_off():
    _, times = arrivals([{"type": "on_off", "rate": 100, "on": 5, "off": 15, "duration": 100}])
    assert np.all(np.mod(times, 20) < 5)


def test_constant_rate_is_evenly_spaced():
    _, times = arrivals([{"type": "constant", "rate": 4, "duration": 10}])
    assert times.size == 40
    assert np.allclose(np.diff(times), 0.25)


def test_phases_play_in_order_with_offsets():
    _, times = arrivals([
        {"type": "poisson", "rate": 0, "duration": 100},
        {"type": "constant", "rate": 1, "duration": 3},
    ])
    assert times.tolist() == [100.0, 101.0, 102.0]


def test_trace_replays_each_minute_count_exactly(trace):
    table = load_trace(trace)
    busiest = int(np.argmax(table.counts.sum(axis=1)))
    phase = {"type": "trace", "file": str(trace), "function": table.functions[busiest][:10],
             "start_minute": 6, "duration": 600}
    _, times = arrivals([phase])
    per_minute = np.bincount((times // 60).astype(int), minlength=10)
    assert per_minute.tolist() == table.counts[busiest, 5:15].tolist()


def test_trace_replays_the_real_azure_row_kept_in_the_repository():
    table = load_trace(REPO_TRACE)
    assert table.counts.shape == (1, 1440)
    phase = {"type": "trace", "file": str(REPO_TRACE), "function": 0, "start_minute": 601, "duration": 180}
    _, times = arrivals([phase])
    per_minute = np.bincount((times // 60).astype(int), minlength=3)
    assert per_minute.tolist() == table.counts[0, 600:603].tolist()
    assert per_minute.sum() > 0


def test_trace_sums_chosen_functions_and_scales(trace):
    table = load_trace(trace)
    phase = {"type": "trace", "file": str(trace), "functions": [0, 1, 2], "duration": 300}
    _, times = arrivals([phase])
    assert times.size == int(table.counts[:3, :5].sum())
    _, halved = arrivals([{**phase, "scale": 0.5}])
    assert abs(halved.size - times.size / 2) <= 5 * math.sqrt(times.size / 4) + 1


@pytest.mark.parametrize(
    ("selection", "message"),
    [
        ({"function": "zzzz"}, 'function="zzzz": no function with that HashFunction prefix'),
        ({"function": 999}, "function=999: row index out of range 0..199"),
        ({"functions": []}, 'expected a non-empty list of functions or "all"'),
        ({}, "trace needs exactly one of function or functions"),
    ],
    ids=["unknown-prefix", "row-out-of-range", "empty-list", "neither"],
)
def test_trace_selection_errors_name_the_key(trace, selection, message):
    with pytest.raises(ScenarioError) as info:
        workload_of([{"type": "trace", "file": str(trace), **selection}])
    assert message in str(info.value)


@pytest.mark.parametrize(
    ("spec", "mean", "sd"),
    [
        ({"dist": "exponential", "mean": 0.2}, 0.2, 0.2),
        ({"dist": "constant", "value": 1.5}, 1.5, 0.0),
        ({"dist": "lognormal", "mean": 2.0, "sd": 0.5}, 2.0, 0.5),
        ({"dist": "empirical", "values": [1, 2, 3, 6]}, 3.0, math.sqrt(3.5)),
    ],
    ids=lambda v: v["dist"] if isinstance(v, dict) else "",
)
def test_distributions_have_the_requested_mean_and_spread(spec, mean, sd):
    sample = parse_distribution(Node(spec, "service_time"), Path(".")).sampler(np.random.default_rng(3))
    values = np.array([sample() for _ in range(40_000)])
    assert values.mean() == pytest.approx(mean, rel=0.02)
    assert values.std() == pytest.approx(sd, rel=0.05, abs=1e-12)
    assert values.min() >= 0


def test_an_on_off_phase_written_with_bare_on_and_off_keys_loads(tmp_path):
    """YAML 1.1 reads a bare ``on:``/``off:`` as true/false; as keys they are the phase's names."""
    from simulation.scenario import load_scenario

    path = tmp_path / "s.yaml"
    path.write_text(
        "duration: 60\nrevision: {service_time: {dist: constant, value: 0.1}}\n"
        "workload:\n  - {type: on_off, rate: 5, on: 10, off: 20, duration: 60}\n"
    )
    assert load_scenario(path).duration == 60
