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
        (
            base(revision__service_time__dist="weird"),
            'revision.service_time.dist="weird": expected one of exponential, constant, lognormal, empirical',
        ),
        ({"revision": {}, "workload": []}, "duration: required"),
        (base(revision__service_tme=1), "revision.service_tme: unknown key; expected one of"),
        (base(warmup=100), "warmup=100: must be shorter than duration (100)"),
        (base(**{"workload.0.rate": -1}), "workload[0].rate=-1: must be >= 0"),
        (
            base(**{"workload.0.type": "fractal"}),
            'workload[0].type="fractal": expected one of poisson, constant',
        ),
        (
            base(revision__container_concurrency=0, revision__queue_depth=5),
            "revision.queue_depth=5: the queue-proxy has no queue when container_concurrency is 0",
        ),
        (base(revision__cores=4), "revision.cores=4: only used with service_model: shared"),
        (
            base(revision__routing="least_loaded"),
            'revision.routing="least_loaded": expected one of random, round_robin',
        ),
        (base(revision__service_time={"dist": "lognormal", "mean": 1}), "revision.service_time.sd: required"),
        (
            base(revision__service_time={"dist": "empirical", "file": "/nonexistent/times.txt"}),
            'revision.service_time.file="/nonexistent/times.txt": cannot read',
        ),
        (base(revision__container_concurrency=1001), "revision.container_concurrency=1001: must be <= 1000"),
        (
            base(**{"revision.annotations.autoscaling.knative.dev/min-scale": "abc"}),
            'revision.annotations: annotation autoscaling.knative.dev/min-scale="abc"',
        ),
        (base(**{"config.stable-window": "2s"}), "config: config-autoscaler stable-window"),
        (base(workload=[]), "workload: expected a non-empty list of phases"),
        (
            base(**{"workload.0": {"type": "burst", "rate": 9, "every": 10, "length": 20, "duration": 50}}),
            "workload[0].length=20: must be <= 10",
        ),
    ],
    ids=[
        "unknown-distribution",
        "no-duration",
        "misspelt-key",
        "warmup-not-shorter",
        "negative-rate",
        "unknown-phase",
        "queue-without-cc",
        "cores-without-shared",
        "unknown-routing",
        "lognormal-without-sd",
        "unreadable-empirical-file",
        "cc-too-big",
        "bad-annotation",
        "bad-config",
        "empty-workload",
        "burst-longer-than-its-period",
    ],
)
def test_bad_scenarios_name_the_key_and_the_reason(doc, message):
    with pytest.raises(ScenarioError) as info:
        parse_scenario(doc)
    assert message in str(info.value)


def test_annotations_accept_numbers_and_booleans_as_kubernetes_strings():
    doc = base(
        **{
            "revision.annotations.autoscaling.knative.dev/min-scale": 3,
            "config.enable-scale-to-zero": False,
        }
    )
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


SCENARIO_FILE = """\
duration: 100
revision:
  container_concurrency: 2
  service_time: {dist: exponential, mean: 0.1}
  annotations:
    autoscaling.knative.dev/min-scale: "1"
  timeout: 30
config:
  stable-window: 60s
workload:
  - {type: poisson, rate: 5, duration: 50}
  - type: poisson
    rate: 5
    duration: 50
"""


@pytest.mark.parametrize(
    ("old", "new", "where", "message"),
    [
        ("  timeout: 30", '  timeout: "abc"', "7:3", 'revision.timeout="abc": expected a number'),
        ("  timeout: 30", "  timout: 30", "7:3", "revision.timout: unknown key"),
        ("    rate: 5\n", "    rate: -5\n", "13:5", "workload[1].rate=-5: must be >= 0"),
        ("{type: poisson, rate: 5,", "{type: poisson, rate: x,", "11:21",
         'workload[0].rate="x": expected a number'),
        ("  - type: poisson\n    rate: 5\n", "  - type: poisson\n", "12:5", "workload[1].rate: required"),
        ("stable-window: 60s", "stable-window: 1s", "9:3", "config: config-autoscaler stable-window"),
        ('min-scale: "1"', 'min-scale: "x"', "6:5",
         "revision.annotations: annotation autoscaling.knative.dev/min"),
        ("{dist: exponential, mean: 0.1}", "{dist: weird}", "4:18", 'revision.service_time.dist="weird"'),
    ],
    ids=["value", "unknown", "block-list-item", "flow-mapping", "missing", "config", "annotation", "nested"],
)  # fmt: skip
def test_errors_from_a_file_give_the_line_and_column_of_the_key(tmp_path, old, new, where, message):
    path = tmp_path / "step.yaml"
    path.write_text(SCENARIO_FILE.replace(old, new))
    with pytest.raises(ScenarioError) as info:
        load_scenario(path)
    line, column = where.split(":")
    assert info.value.located(path.name) == f"step.yaml:{where}: {info.value.message}"
    assert str(info.value).startswith(f"line {line}, column {column}: {message}")


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("  timeout: 30\n", "  timeout: 30\n  timeout: 60\n",
         "step.yaml:8:3: revision.timeout: duplicate key (also at line 7)"),
        ("duration: 100\n", "duration: 100\nseed: 1\nduration: 200\n",
         "step.yaml:3:1: duration: duplicate key (also at line 1)"),
        ("{type: poisson, rate: 5, duration: 50}", "{type: poisson, rate: 5, rate: 6, duration: 50}",
         "step.yaml:11:30: workload[0].rate: duplicate key (also at line 11)"),
        ('autoscaling.knative.dev/min-scale: "1"\n',
         'autoscaling.knative.dev/min-scale: "1"\n    autoscaling.knative.dev/min-scale: "2"\n',
         "step.yaml:7:5: revision.annotations.autoscaling.knative.dev/min-scale: duplicate key (also at "
         "line 6)"),
    ],
    ids=["revision", "top", "flow", "annotation"],
)  # fmt: skip
def test_duplicate_keys_are_rejected_naming_both_lines(tmp_path, old, new, message):
    path = tmp_path / "step.yaml"
    path.write_text(SCENARIO_FILE.replace(old, new))
    with pytest.raises(ScenarioError) as info:
        load_scenario(path)
    assert info.value.located(path.name).startswith(message)


def test_yaml_anchors_and_merges_still_load(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(
        SCENARIO_FILE.replace(
            "  - type: poisson\n",
            "  - &p {type: poisson, rate: 5, duration: 50}\n  - <<: *p\n    type: poisson\n",
        ).replace("    rate: 5\n    duration: 50\n", "", 1)
    )
    assert [phase.rate_per_s for phase in load_scenario(path).workload.phases] == [5.0, 5.0, 5.0]


SECRET = "root:$6$saltsalt$SeCrEtHaShVaLuE:19000:0:99999:7:::"


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (SECRET + "\n", "line 1: expected a number >= 0"),
        ("0.5\n1.5\n" + SECRET + "\n", "line 3: expected a number >= 0"),
        ("0.5\n-1\n", "line 2: expected a number >= 0"),
        ("# only a comment\n\n", "no values: expected one number per line"),
        (b"\xff\xfe" + SECRET.encode(), "not UTF-8 text (byte 1)"),
    ],
    ids=["first-line", "third-line", "negative", "empty", "binary"],
)
def test_empirical_file_errors_name_the_file_and_line_never_its_text(tmp_path, content, expected):
    data = tmp_path / "shadow"
    data.write_bytes(content if isinstance(content, bytes) else content.encode())
    doc = base(revision__service_time={"dist": "empirical", "file": str(data)})
    with pytest.raises(ScenarioError) as info:
        parse_scenario(doc)
    message = str(info.value)
    assert str(data) in message and expected in message
    assert "SeCrEt" not in message and "root:" not in message


def test_trace_file_errors_name_the_line_and_column_never_the_text(tmp_path):
    data = tmp_path / "trace.csv"
    data.write_text(
        "HashFunction,HashApp,HashOwner,1,2\nf,a,o,3,4\ng,a,o,5," + SECRET.replace(":", "_") + "\n"
    )
    doc = base(workload=[{"type": "trace", "file": str(data), "function": 0}])
    with pytest.raises(ScenarioError) as info:
        parse_scenario(doc)
    message = str(info.value)
    assert f"{data}, line 3, column 5: expected a per-minute count" in message
    assert "SeCrEt" not in message


def test_data_files_that_are_not_regular_files_are_refused(tmp_path):
    doc = base(revision__service_time={"dist": "empirical", "file": str(tmp_path)})
    with pytest.raises(ScenarioError, match="not a regular file"):
        parse_scenario(doc)
