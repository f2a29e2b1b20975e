"""Many revisions under one clock: per-revision figures and totals that add up, nodes too small for
everyone (pending pods, longer cold starts), the idle skip equal to ticking everything, an Azure replay."""

import time
from pathlib import Path

import pytest

from simulation.many import ManySimulation
from simulation.many_report import summarize_many
from simulation.many_scenario import load_many, parse_many
from simulation.scenario import ScenarioError

EXAMPLES = Path(__file__).parents[2] / "examples"
AZURE = EXAMPLES / "data" / "azure2019"
A = "autoscaling.knative.dev/"


def poisson(rate: float, seconds: float) -> dict:
    return {"type": "poisson", "rate": rate, "duration": seconds}


def two_services(nodes: int | None = None) -> dict:
    """Revision api is busy for the first 100 s, revision batch from 80 s to 200 s; pods ask 1 core.

    On one 1-core node, batch's pod cannot start before api's pod has left (scale to zero after the
    stable window, then its drain): batch's first requests wait for room as well as for start-up.
    """
    document = {
        "duration": 300,
        "seed": 3,
        "revision": {
            "container_concurrency": 1,
            "service_time": {"dist": "exponential", "mean": 0.2},
            "cold_start": {"dist": "constant", "value": 1.0},
            "timeout": 600,
            "annotations": {A + "window": "10s", A + "max-scale": "1"},
        },
        "config": {"initial-scale": "0", "allow-zero-initial-scale": "true"},  # both start at zero
        "platform": {"drain_period": 5},
        "revisions": [
            {"name": "api", "workload": [poisson(2, 100), poisson(0, 200)]},
            {
                "name": "batch",
                "service_time": {"dist": "constant", "value": 0.1},
                "workload": [poisson(0, 80), poisson(1, 120), poisson(0, 100)],
            },
        ],
    }
    if nodes is not None:
        document["cluster"] = {"nodes": [{"count": nodes, "cpu": 1, "memory": "1Gi"}], "pod": {"cpu": 1}}
    return document


def run(document: dict, **options) -> tuple[ManySimulation, dict]:
    sim = ManySimulation(parse_many(document), **options).run()
    return sim, summarize_many(sim)


def by_name(report: dict) -> dict:
    return {row["name"]: row for row in report["revisions"]}


def test_per_revision_figures_add_up_to_the_totals():
    sim, report = run(two_services())
    rows, totals = report["revisions"], report["totals"]
    for key in ("requests", "completed", "rejected", "timed_out", "cold_start_requests", "scale_events"):
        assert totals[key] == sum(row[key] for row in rows), key
    assert totals["pod_seconds"] == pytest.approx(sum(row["pod_seconds"] for row in rows))
    assert totals["requests"] == totals["completed"] > 150  # every request answered, none lost
    assert by_name(report)["api"]["requests"] > 0 and by_name(report)["batch"]["requests"] > 0
    assert sum(row.arrivals for row in sim.timeline) == totals["requests"]
    assert sum(row.completions for row in sim.timeline) == totals["completed"]
    # the totals' pod-seconds are the ready+starting+draining pods of the timeline, second by second
    alive = sum(row.ready_pods + row.starting_pods + row.draining_pods for row in sim.timeline)
    assert alive == pytest.approx(totals["pod_seconds"], rel=0.05)


def test_nodes_too_small_for_both_make_pods_wait_and_cold_starts_longer():
    _, big = run(two_services(nodes=2))
    _, small = run(two_services(nodes=1))
    assert big["totals"]["pending"]["pods"] == 0
    batch_big, batch_small = by_name(big)["batch"], by_name(small)["batch"]
    assert batch_small["pending"]["pods"] >= 1 and batch_small["pending"]["max_wait"] > 5
    assert by_name(small)["api"]["pending"]["pods"] == 0  # first come: api's pod had the node
    # batch's cold-start requests waited for room as well as for the pod's start-up
    assert batch_small["cold_start_requests"] >= 1
    assert batch_small["wait"]["mean"] > batch_big["wait"]["mean"] + 1
    assert batch_small["latency"]["p99"] > batch_small["pending"]["max_wait"]
    assert small["totals"]["completed"] == small["totals"]["requests"]  # waiting lost nothing (timeout 600 s)


@pytest.mark.parametrize("nodes", [None, 1], ids=["no cluster", "one small node"])
def test_skipping_idle_revisions_changes_no_figure(nodes):
    document = two_services(nodes)
    document["duration"] = 900  # long idle stretches after the traffic: revisions at rest
    document["revisions"][0]["workload"].append(
        {"type": "on_off", "rate": 3, "on": 20, "off": 200, "duration": 600}
    )
    fast, fast_report = run(document, skip_idle=True)
    slow, slow_report = run(document, skip_idle=False)
    assert fast.revision_ticks < slow.revision_ticks * 0.8  # idle revisions were skipped...
    for report in (fast_report, slow_report):
        del report["wall_seconds"], report["requests_per_wall_second"], report["revision_seconds_ticked"]
    assert fast_report == slow_report  # ...and nothing changed: every revision's figures, the totals
    strip = [lambda r: (r.second, r.desired_pods, r.replicas, r.ready_pods, r.starting_pods, r.pending_pods,
                        r.draining_pods, r.activator_waiting, r.in_flight, r.arrivals, r.completions,
                        r.rejections, r.timeouts)]  # fmt: skip
    assert [strip[0](r) for r in fast.timeline] == [strip[0](r) for r in slow.timeline]


def test_azure_replay_smoke_twenty_functions_half_an_hour():
    document = {
        "duration": 1800,
        "revision": {"cold_start": {"dist": "constant", "value": 1.0}},
        "config": {"initial-scale": "0", "allow-zero-initial-scale": "true"},
        "functions": {
            "invocations": str(AZURE / "200_inv.csv"),
            "durations": str(AZURE / "200_run.csv"),
            "memory": str(AZURE / "200_mem.csv"),
            "select": 20,
        },
        "cluster": {"nodes": [{"count": 4, "cpu": 4, "memory": "16Gi"}]},
    }
    started = time.perf_counter()
    _, report = run(document)
    assert time.perf_counter() - started < 30
    assert report["revision_count"] == 20
    totals = report["totals"]
    assert totals["requests"] == sum(row["requests"] for row in report["revisions"]) > 10_000
    assert totals["completed"] + totals["rejected"] + totals["timed_out"] == totals["requests"]
    assert totals["cold_start_requests"] > 0 and totals["latency"]["p50"] > 0


def test_the_example_parses_every_function_with_its_own_service_time_and_memory():
    scenario = load_many(EXAMPLES / "scenarios" / "many" / "azure-day.yaml")
    assert len(scenario.revisions) == 200 and scenario.nodes is not None and len(scenario.nodes) == 8
    assert len({run.scenario.revision.service_time for run in scenario.revisions}) > 150
    assert len({run.requests.memory for run in scenario.revisions}) > 100
    assert all(run.scenario.settings.initial_scale == 0 for run in scenario.revisions)


def test_skipping_idle_revisions_changes_no_figure_on_forty_azure_functions():
    """Real traces: mostly idle functions that wake, scale from zero, and fall asleep again."""
    document = {
        "duration": 2400,
        "revision": {"container_concurrency": 1, "cold_start": {"dist": "constant", "value": 1.0}},
        "config": {"stable-window": "20s", "scale-to-zero-grace-period": "10s"},
        "platform": {"drain_period": 5},
        "functions": {"invocations": str(AZURE / "200_inv.csv"), "durations": str(AZURE / "200_run.csv"),
                      "memory": str(AZURE / "200_mem.csv"), "select": list(range(40)), "start_minute": 600},
        "cluster": {"nodes": [{"count": 2, "cpu": 2, "memory": "4Gi"}]},
    }  # fmt: skip
    fast, fast_report = run(document, skip_idle=True)
    slow, slow_report = run(document, skip_idle=False)
    assert fast.revision_ticks < slow.revision_ticks / 2
    for report in (fast_report, slow_report):
        del report["wall_seconds"], report["requests_per_wall_second"], report["revision_seconds_ticked"]
    assert fast_report == slow_report
    assert fast_report["totals"]["requests"] > 1000 and fast_report["totals"]["pending"]["pods"] > 0


def test_requests_in_flight_are_bounded_across_revisions(monkeypatch):
    monkeypatch.setattr("simulation.limits.MAX_IN_FLIGHT", 100)  # each revision stays below it alone
    slow = {"service_time": {"dist": "constant", "value": 100.0}, "timeout": 300}
    document = {
        "duration": 60,
        "revision": slow,
        "revisions": [{"name": f"r{i}", "workload": [poisson(2, 60)]} for i in range(3)],
    }
    with pytest.raises(ScenarioError, match=r"at \d+ s 1\d\d requests were queued or in service"):
        run(document)
