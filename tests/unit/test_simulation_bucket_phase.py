"""`platform.bucket_phase` and `platform.activator_report_phase`: where the clocks fall in the metric buckets.

Knative buckets stats by wall-clock second and ticks its decider every 2 s from whenever the revision's
Metric appeared; the activator reports on its own 1 s loop. A decision at 0.6 s into a bucket reads
that bucket's first 0.6 s too, and its stable window reaches 0.6 s further back than one made on a
boundary — so the last stats leave the window later, and the revision reaches zero a tick later.
"""

import pytest
from tables import named

from simulation.engine import Simulation
from simulation.scenario import ScenarioError, parse_scenario, set_path


def step(**platform):
    """8 req/s of 0.25 s for 10 s at cc 1, then idle: a 10 s stable window, a 1 s grace period."""
    doc = {
        "duration": 30,
        "revision": {
            "container_concurrency": 1,
            "service_time": {"dist": "constant", "value": 0.25},
            "cold_start": {"dist": "constant", "value": 0.5},
            "annotations": {"autoscaling.knative.dev/initial-scale": "0"},
        },
        "config": {
            "stable-window": "10s",
            "scale-to-zero-grace-period": "1s",
            "allow-zero-initial-scale": "true",
        },
        "platform": {"drain_period": 0.5, **platform},
        "workload": [
            {"type": "constant", "rate": 8, "duration": 10},
            {"type": "poisson", "rate": 0, "duration": 20},
        ],
    }
    return parse_scenario(doc)


def first_empty_decision(sim: Simulation) -> int:
    """The first second after the load whose decision saw an empty stable window."""
    return min(row.second for row in sim.timeline if row.second > 10 and row.stable_concurrency == 0)


def test_defaults_decide_on_bucket_boundaries_with_the_activator_half_a_second_off():
    platform = step().platform
    assert (platform.bucket_phase, platform.activator_report_phase) == (0.0, 0.5)


PHASES = [
    # The last activator report with concurrency comes at 10.5 s (report phase 0.5) or 10.9 s (0.9):
    # bucket 10. A 10 s window read on a boundary at 20 s holds buckets 11..20: empty. Read 0.6 s into
    # its bucket (autoscaler time 20.6) it holds the same buckets, but that last report now lands in
    # bucket 11 (10.5 + 0.6 = 11.1, 10.9 + 0.6 = 11.5): the window is empty only at the next tick.
    ("on boundaries, report at .5", 0.0, 0.5, 20),
    ("on boundaries, report at .9", 0.0, 0.9, 20),
    ("0.6 s into a bucket, report at .5", 0.6, 0.5, 22),
    ("0.6 s into a bucket, report at .9", 0.6, 0.9, 22),
]


@pytest.mark.parametrize(("label", "bucket", "report", "empty_at"), named(PHASES))
def test_a_decision_later_in_its_bucket_reads_stats_a_tick_longer(label, bucket, report, empty_at):
    sim = Simulation(step(bucket_phase=bucket, activator_report_phase=report), 1).run()
    assert first_empty_decision(sim) == empty_at


@pytest.mark.parametrize("key", ["bucket_phase", "activator_report_phase"])
@pytest.mark.parametrize(
    ("value", "message"), [(1.0, "must be < 1"), (-0.1, "must be >= 0"), ("x", "a number")]
)
def test_a_phase_is_a_fraction_of_a_second(key, value, message):
    doc = step().document
    doc = {**doc, "platform": {}}
    set_path(doc, f"platform.{key}", value)
    with pytest.raises(ScenarioError, match=f"platform.{key}.*{message}"):
        parse_scenario(doc)
