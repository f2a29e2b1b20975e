"""What one simulation may cost: refused up front with the key and the fix, or held in bounded memory."""

import csv
import math

import numpy as np
import pytest

from simulation import limits
from simulation.engine import Simulation
from simulation.report import TimelineWriter
from simulation.sample import RELATIVE_ERROR, Sample
from simulation.scenario import ScenarioError, parse_scenario, set_path
from simulation.sweep_cli import cells
from simulation.workloads import BLOCK_ARRIVALS, Constant, Poisson, Trace

A = "autoscaling.knative.dev/"


def base(**changes):
    doc = {
        "duration": 100,
        "revision": {"container_concurrency": 1, "service_time": {"dist": "exponential", "mean": 0.1}},
        "workload": [{"type": "poisson", "rate": 5, "duration": 100}],
    }
    for path, value in changes.items():
        set_path(doc, path, value)
    return doc


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"workload.0.rate": 1e7, "workload.0.duration": 3600, "duration": 3600},
         "workload[0].rate=10000000 x duration=3600 ≈ 3.6e+10 requests: above the 100,000,000-request limit "
         "of one simulation; shorten duration or lower the rate"),
        ({"duration": 160,
          "workload": [{"type": "poisson", "rate": 0, "duration": 10},
                       {"type": "sinusoid", "mean": 4e5, "amplitude": 4e5, "period": 60, "duration": 150}]},
         "workload[1].mean=400000 x duration=150 ≈ 1.2e+08 requests (all phases: ≈ 1.2e+08)"),  # at the peak
        ({"workload.0": {"type": "constant", "rate": 2e6, "duration": 100}},
         "workload[0].rate=2000000 x duration=100 ≈ 2e+08 requests"),
        ({"duration": 1e9, "workload.0.duration": 1e9, "workload.0.rate": 0},
         "duration=1000000000: above the 10,000,000-second limit of one simulation"),
        ({"duration": 9_999_900, "workload.0.duration": 9_999_900, "workload.0.rate": 0},
         "revision.timeout=300: duration + timeout (requests still in flight may run that long) is above the "
         "10,000,000-second limit"),
        ({f"revision.annotations.{A}min-scale": "20000"},
         f"revision.annotations {A}min-scale: 20,000 pods, above the 10,000-pod limit of one simulation; "
         "lower min-scale"),
    ],
    ids=["rate-1e7", "thinning-peak", "constant", "duration-1e9", "timeout", "min-scale"],
)  # fmt: skip
def test_what_cannot_finish_is_refused_before_anything_is_drawn(changes, message):
    doc = base()
    for key, value in changes.items():
        set_path(doc, key, value)
    with pytest.raises(ScenarioError) as info:
        parse_scenario(doc)
    assert message in str(info.value)


def test_the_limits_leave_ordinary_long_scenarios_alone():
    year_quiet = base(duration=9_000_000, **{"workload.0.duration": 9_000_000, "workload.0.rate": 0})
    busy_hour = base(duration=3600, **{"workload.0.duration": 3600, "workload.0.rate": 20_000})
    assert parse_scenario(year_quiet).duration == 9_000_000
    assert parse_scenario(busy_hour).workload.expected_requests(3600) == pytest.approx(7.2e7)


def test_the_autoscaler_asking_for_more_pods_than_a_simulation_holds_stops_the_run(monkeypatch):
    monkeypatch.setattr(limits, "MAX_PODS", 5)
    doc = base(**{"workload.0.rate": 100})  # 100 req/s of 0.1 s at cc 1 wants ~15 pods
    expected = r"the autoscaler's decision at \d+ s: \d+ pods, above the 5-pod limit"
    with pytest.raises(ScenarioError, match=expected):
        Simulation(parse_scenario(doc), 1).run()


def test_requests_piling_up_past_the_in_flight_limit_stop_the_run(monkeypatch):
    monkeypatch.setattr(limits, "MAX_IN_FLIGHT", 1000)
    doc = base(**{"revision.service_time": {"dist": "constant", "value": 1000}, "revision.timeout": 2000})
    set_path(doc, f"revision.annotations.{A}min-scale", "1")
    set_path(doc, f"revision.annotations.{A}max-scale", "1")
    set_path(doc, "revision.container_concurrency", 0)
    set_path(doc, "workload.0.rate", 100)  # 100 req/s of 1000 s requests on one unlimited pod
    with pytest.raises(
        ScenarioError, match=r"at \d+(\.\d+)? s 1,001 requests were queued or in service: above"
    ):
        Simulation(parse_scenario(doc), 1).run()


def test_a_grid_beyond_the_cell_limit_is_refused_without_building_it():
    grid = [("revision.timeout", list(range(1000))), ("workload.0.rate", list(range(1000)))]
    expected = r"--grid: 1,000,000 cells \(1,000 x 1,000\), above the 10,000-cell limit of one sweep"
    with pytest.raises(ScenarioError, match=expected):
        cells(grid)
    assert len(cells(grid[:1])) == 1000


@pytest.mark.parametrize(
    "phase",
    [Poisson(400_000.0, 6.0), Constant(400_000.0, 6.0)],
    ids=["poisson", "constant"],
)
def test_high_rates_are_drawn_in_bounded_blocks(phase):
    blocks = list(phase.arrivals(np.random.default_rng(1)))
    sizes = [block.size for block in blocks]
    assert max(sizes) <= BLOCK_ARRIVALS
    assert sum(sizes) == pytest.approx(2.4e6, rel=0.01)
    times = np.concatenate(blocks)
    assert np.all(np.diff(times) >= 0) and times[-1] < 6.0


def test_a_huge_trace_minute_is_drawn_in_bounded_sorted_blocks():
    trace = Trace((10, 2_500_000, 10), 1.0, 180.0, "huge")
    blocks = list(trace.arrivals(np.random.default_rng(1)))
    assert max(block.size for block in blocks) <= BLOCK_ARRIVALS
    times = np.concatenate(blocks)
    assert times.size == 2_500_020
    assert np.all(np.diff(times) >= 0)
    assert np.count_nonzero((times >= 60) & (times < 120)) == 2_500_000


def test_a_sample_is_numpys_exactly_below_its_limit_and_within_its_accuracy_above():
    rng = np.random.default_rng(5)
    values = np.concatenate([np.zeros(20_000), rng.lognormal(-1.0, 1.2, 180_000)])
    rng.shuffle(values)
    exact, bounded = Sample(), Sample(exact_limit=10_000)
    for sample in (exact, bounded):
        for i, value in enumerate(values.tolist(), start=1):
            sample.append(value)
            if i >= sample.next_check:
                sample.fold_due()
    assert exact.exact and not bounded.exact
    assert len(exact) == len(bounded) == values.size
    assert exact.mean() == float(values.mean())
    assert bounded.mean() == pytest.approx(float(values.mean()), rel=1e-12)
    ordered = np.sort(values)
    for q in (5, 50, 95, 99, 99.9):
        assert exact.percentile(q) == float(np.percentile(values, q))
        rank = q / 100 * (values.size - 1)  # numpy interpolates between the order statistics around it
        low, high = ordered[math.floor(rank)], ordered[math.ceil(rank)]
        assert low * (1 - RELATIVE_ERROR) - 1e-12 <= bounded.percentile(q) <= high * (1 + RELATIVE_ERROR)
    with pytest.raises(ValueError, match="only a histogram is kept"):
        bounded.values()


def test_streamed_timeline_rows_are_the_in_memory_rows(tmp_path):
    doc = base(**{"workload": [{"type": "poisson", "rate": 0, "duration": 20},
                               {"type": "poisson", "rate": 30, "duration": 60},
                               {"type": "poisson", "rate": 0, "duration": 20}]})  # fmt: skip
    scenario = parse_scenario(doc)
    kept = Simulation(scenario, 3).run()
    with TimelineWriter(tmp_path / "timeline.csv", plot_rows=16) as writer:
        streamed = Simulation(scenario, 3, timeline=writer).run()
    assert streamed.timeline == []  # nothing kept in the simulation itself
    with (tmp_path / "timeline.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [int(r["second"]) for r in rows] == [row.second for row in kept.timeline] == list(range(100))
    assert [int(r["arrivals"]) for r in rows] == [row.arrivals for row in kept.timeline]
    assert [int(r["completions"]) for r in rows] == [row.completions for row in kept.timeline]
    assert sum(row.arrivals for row in kept.timeline) == kept.arrivals == streamed.arrivals
    plotted = writer.plot_rows()
    assert len(plotted) <= 16 and writer.stride == 8  # 100 rows: every 8th second kept for the plot
    assert [r["second"] for r in plotted] == list(range(0, 100, 8))


def test_gone_pods_leave_only_their_times():
    doc = base(**{"workload": [{"type": "on_off", "rate": 20, "on": 5, "off": 120, "duration": 1000}]})
    set_path(doc, "duration", 1000)
    sim = Simulation(parse_scenario(doc), 1).run()
    lives = sim.fleet.lives()
    gone = [life for life in lives if life.gone_at is not None]
    assert len(gone) >= 8  # scaled to zero after every burst
    assert len(sim.fleet.pods) == len(lives) - len(gone) <= 2
    assert all(math.isfinite(life.created) for life in lives)


def test_validate_refuses_live_runs_it_could_not_hold():
    from kpa.validate import unsupported  # drives the live stack: imported only here

    flood = parse_scenario(base(**{"workload.0.rate": 20_000}))  # 2e6 requests in 100 s
    many = parse_scenario(base(revision={"service_time": {"dist": "empirical", "values": [0.1] * 6000}}))
    assert any("a live run sends at most 1,000,000" in problem for problem in unsupported(flood))
    assert any("6,000 empirical values" in problem for problem in unsupported(many))
    assert unsupported(parse_scenario(base())) == []
