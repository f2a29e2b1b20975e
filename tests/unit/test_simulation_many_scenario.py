"""The many-revision scenario format: what a revision inherits, and bad input named with file:line."""

import re
from pathlib import Path

import pytest
from tables import named

from simulation.many_scenario import is_many, load_many
from simulation.scenario import ScenarioError

AZURE = Path(__file__).parents[2] / "examples" / "data" / "azure2019"

BASE = """\
duration: 120
revision:
  container_concurrency: 2
  service_time: {dist: exponential, mean: 0.1}
  annotations: {"autoscaling.knative.dev/max-scale": "3", "autoscaling.knative.dev/window": "20s"}
revisions:
  - name: a
    workload: [{type: poisson, rate: 1, duration: 120}]
  - name: b
    container_concurrency: 5
    annotations: {"autoscaling.knative.dev/max-scale": "7"}
    resources: {cpu: "500m", memory: 1Gi}
    workload: [{type: poisson, rate: 1, duration: 120}]
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "many.yaml"
    path.write_text(text)
    return path


def test_each_revision_overrides_the_template_and_merges_annotations(tmp_path):
    scenario = load_many(write(tmp_path, BASE))
    a, b = scenario.revisions
    assert (a.name, b.name) == ("a", "b") and scenario.nodes is None
    assert a.scenario.revision.container_concurrency == 2 and b.scenario.revision.container_concurrency == 5
    assert a.scenario.settings.max_scale == 3 and b.scenario.settings.max_scale == 7
    assert b.scenario.settings.stable_window == 20  # kept from the template's annotations
    assert (b.requests.cpu, b.requests.memory) == (500, 1024) and a.requests.cpu == 250  # default pod


@pytest.mark.parametrize(
    ("label", "change", "message"),
    named(
        [
            (
                "unknown key in an entry",
                ("    container_concurrency: 5", "    concurrency: 5"),
                r"many\.yaml:10:5: revisions\[1\]\.concurrency: unknown key",
            ),
            ("bad value a revision inherits", ('"7"}', '"x"}'), r"many\.yaml:11:\d+: .*max-scale.*x"),
            ("names twice", ("name: b", "name: a"), r"revision name 'a' given twice"),
            (
                "pod larger than every node",
                ("duration: 120\n", "duration: 120\ncluster: {nodes: [{cpu: 0.25, memory: 2Gi}]}\n"),
                r"many\.yaml:2:1: cluster: .*'b' asks 500 m CPU and 1024 MiB .*add a bigger node",
            ),
            (
                "bad cpu",
                ('cpu: "500m"', "cpu: lots"),
                r"many\.yaml:12:\d+: revisions\[1\]\.resources\.cpu=.*cores",
            ),
            (
                "bad memory",
                ("memory: 1Gi", "memory: -1"),
                r"resources\.memory=-1: expected memory such as 512Mi",
            ),
            (
                "a top-level workload",
                ("revisions:", "workload: []\nrevisions:"),
                r"many\.yaml:6:1: workload: unknown key",
            ),
        ]
    ),
)
def test_bad_many_revision_scenarios_name_file_line_and_key(tmp_path, label, change, message):
    path = write(tmp_path, BASE.replace(*change))
    with pytest.raises(ScenarioError) as info:
        load_many(path)
    assert re.search(message, info.value.located(path)), info.value.located(path)


def functions(select: str, extra: str = "") -> str:
    return f"""\
duration: 600
revision: {{cold_start: {{dist: constant, value: 1.0}}}}
functions:
  invocations: {AZURE / "200_inv.csv"}
  durations: {AZURE / "200_run.csv"}
  select: {select}
{extra}"""


def test_functions_select_the_busiest_and_take_their_own_durations(tmp_path):
    scenario = load_many(write(tmp_path, functions("3")))
    assert len(scenario.revisions) == 3
    assert all(run.name.count(":") == 1 for run in scenario.revisions)
    requests = [sum(run.scenario.workload.phases[0].counts) for run in scenario.revisions]
    assert min(requests) > 0
    assert len({run.scenario.revision.service_time for run in scenario.revisions}) == 3


@pytest.mark.parametrize(
    ("label", "text", "message"),
    named(
        [
            (
                "select not understood",
                functions("most"),
                r'functions\.select="most": expected "all", a number N',
            ),
            (
                "no such function",
                functions("[zzzz]"),
                r'many\.yaml:6:\d+: functions\.select\[0\]="zzzz": no function',
            ),
            (
                "trace too short",
                functions("2", "  start_minute: 1440"),
                r"functions\.start_minute=1440: the trace has 1440",
            ),
            (
                "no service time anywhere",
                functions("2").replace(f"  durations: {AZURE / '200_run.csv'}\n", ""),
                r"many\.yaml:4:\d+: functions: no durations file and no revision\.service_time",
            ),
        ]
    ),
)
def test_bad_functions_sections_name_the_key(tmp_path, label, text, message):
    path = write(tmp_path, text)
    with pytest.raises(ScenarioError) as info:
        load_many(path)
    assert re.search(message, info.value.located(path)), info.value.located(path)


def test_only_files_with_revisions_or_functions_are_many():
    assert is_many({"revisions": []}) and is_many({"functions": {}})
    assert not is_many({"revision": {}, "workload": []}) and not is_many([])
