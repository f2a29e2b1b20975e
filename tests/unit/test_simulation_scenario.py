"""Scenario files: defaults, overrides, and bad input rejected with the key path and the reason."""

from pathlib import Path

import pytest

from simulation.distributions import Constant, Exponential
from simulation.scenario import ScenarioError, load_scenario, parse_scenario, set_path

EXAMPLES = sorted((Path(__file__).parents[2] / "examples" / "scenarios").glob("*.yaml"))


def base(**changes):
    doc = {
        "duration": 100,
        "revision": {"container_concurrency": 2, "service_time": {"dist": "exponential", "mean": 0.1}},
        "workload": [{"type": "poisson", "rate": 5, "duration": 100}],
    }
    for path, value in changes.items():
        set_path(doc, path.replace("__", "."), value)
    return doc


def test_defaults_follow_knative_and_the_issue_contract():
    scenario = parse_scenario(base())
    rev = scenario.revision
    assert rev.queue_depth == 20  # 10 × cc
    assert rev.service_model == "parallel"
    assert rev.routing == "random"
    assert rev.timeout == 300
    assert rev.cold_start == Constant(2.0)
    assert rev.service_time == Exponential(0.1)
    assert scenario.warmup == 0 and scenario.seed == 1
    assert scenario.settings.spec.target_value == pytest.approx(1.4)  # cc 2 × 0.7
    assert scenario.settings.spec.target_burst_capacity == 211


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        (base(revision__service_time__dist="weird"),
         'revision.service_time.dist="weird": expected one of exponential, constant, lognormal, empirical'),
        ({"revision": {}, "workload": []}, "duration: required"),
        (base(revision__service_tme=1), "revision.service_tme: unknown key; expected one of"),
        (base(warmup=100), "warmup=100: must be shorter than duration (100)"),
        (base(**{"workload.0.rate": -1}), "workload[0].rate=-1: must be >= 0"),
        (base(**{"workload.0.type": "fractal"}),
         'workload[0].type="fractal": expected one of poisson, constant'),
        (base(revision__container_concurrency=0, revision__queue_depth=5),
         "revision.queue_depth=5: the queue-proxy has no queue when container_concurrency is 0"),
        (base(revision__cores=4), "revision.cores=4: only used with service_model: shared"),
        (base(revision__routing="least_loaded"),
         'revision.routing="least_loaded": expected one of random, round_robin'),
        (base(revision__service_time={"dist": "lognormal", "mean": 1}), "revision.service_time.sd: required"),
        (base(revision__service_time={"dist": "empirical", "file": "/nonexistent/times.txt"}),
         'revision.service_time.file="/nonexistent/times.txt": cannot read'),
        (base(revision__container_concurrency=1001), "revision.container_concurrency=1001: must be <= 1000"),
        (base(**{"revision.annotations.autoscaling.knative.dev/min-scale": "abc"}),
         'revision.annotations: annotation autoscaling.knative.dev/min-scale="abc"'),
        (base(**{"config.stable-window": "2s"}), "config: config-autoscaler stable-window"),
        (base(workload=[]), "workload: expected a non-empty list of phases"),
        (base(**{"workload.0": {"type": "burst", "rate": 9, "every": 10, "length": 20, "duration": 50}}),
         "workload[0].length=20: must be <= 10"),
    ],
)
def test_bad_scenarios_name_the_key_and_the_reason(doc, message):
    with pytest.raises(ScenarioError) as info:
        parse_scenario(doc)
    assert message in str(info.value)


def test_annotations_accept_numbers_and_booleans_as_kubernetes_strings():
    doc = base(**{
        "revision.annotations.autoscaling.knative.dev/min-scale": 3,
        "config.enable-scale-to-zero": False,
    })
    scenario = parse_scenario(doc)
    assert scenario.settings.min_scale == 3
    assert scenario.settings.enable_scale_to_zero is False


def test_set_path_treats_everything_after_annotations_as_one_key():
    doc = base()
    set_path(doc, "revision.annotations.autoscaling.knative.dev/target", 10)
    set_path(doc, "workload.0.rate", 7)
    assert doc["revision"]["annotations"] == {"autoscaling.knative.dev/target": 10}
    assert doc["workload"][0]["rate"] == 7
    with pytest.raises(ScenarioError, match=r"workload\[3\]: no such list item"):
        set_path(doc, "workload.3.rate", 1)


def test_load_scenario_resolves_files_next_to_the_scenario(tmp_path):
    (tmp_path / "times.txt").write_text("# measured\n0.5\n1.5, extra\n\n")
    (tmp_path / "s.yaml").write_text(
        "duration: 10\nrevision:\n  service_time: {dist: empirical, file: times.txt}\n"
        "workload:\n  - {type: constant, rate: 1, duration: 10}\n"
    )
    scenario = load_scenario(tmp_path / "s.yaml", {"revision.container_concurrency": 3})
    assert scenario.revision.service_time.values == (0.5, 1.5)
    assert scenario.revision.container_concurrency == 3
    assert scenario.source == "s.yaml"


def test_yaml_that_is_not_a_mapping_is_rejected(tmp_path):
    (tmp_path / "s.yaml").write_text("- just\n- a list\n")
    with pytest.raises(ScenarioError, match="expected a mapping at the top level"):
        load_scenario(tmp_path / "s.yaml")


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_scenarios_are_valid(path):
    assert load_scenario(path).duration > 0


def test_misspelt_config_key_is_rejected_with_a_suggestion():
    doc = base(config={"stable-windw": "30s"})
    with pytest.raises(ScenarioError) as info:
        parse_scenario(doc)
    message = str(info.value)
    assert message.startswith('config: config-autoscaler stable-windw="30s": unknown key')
    assert "did you mean 'stable-window'?" in message
