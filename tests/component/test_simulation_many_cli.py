"""`kpa simulate` on a many-revision scenario, as a user runs it: a child process, files on disk."""

import csv
import json
import subprocess
import sys

SCENARIO = """\
duration: 240
seed: 2
revision:
  container_concurrency: 1
  service_time: {dist: exponential, mean: 0.3}
  cold_start: {dist: constant, value: 1.0}
config: {"initial-scale": "0", "allow-zero-initial-scale": "true"}
revisions:
  - name: api
    workload: [{type: poisson, rate: 3, duration: 240}]
  - name: reports
    resources: {cpu: 2, memory: 1Gi}
    workload: [{type: poisson, rate: 0, duration: 60}, {type: poisson, rate: 1, duration: 120}]
cluster:
  nodes: [{count: 1, cpu: 2, memory: 4Gi}]
  pod: {cpu: 500m, memory: 256Mi}
"""


def kpa(*args, timeout=120):
    return subprocess.run(
        [sys.executable, "-m", "kpa", *map(str, args)], capture_output=True, text=True, timeout=timeout
    )


def test_many_revisions_write_per_revision_and_total_figures_a_timeline_and_a_plot(tmp_path):
    path = tmp_path / "two.yaml"
    path.write_text(SCENARIO)
    result = kpa("simulate", path, "--out", tmp_path / "out")
    assert result.returncode == 0, result.stderr
    assert "total" in result.stdout and "api" in result.stdout and "reports" in result.stdout
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    names = [row["name"] for row in report["revisions"]]
    assert names == ["api", "reports"] and report["revision_count"] == 2 and report["nodes"] == 1
    totals = report["totals"]
    assert totals["requests"] == sum(row["requests"] for row in report["revisions"]) > 500
    assert set(totals) >= {"latency", "wait", "pod_seconds", "ready_pods", "pending", "cold_start_requests"}
    with (tmp_path / "out" / "timeline.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 240 and {"ready_pods", "pending_pods", "awake_revisions"} <= set(rows[0])
    assert sum(int(row["arrivals"]) for row in rows) == totals["requests"]
    assert (tmp_path / "out" / "timeline.png").stat().st_size > 10_000


def test_a_pod_no_node_can_hold_is_refused_with_the_line(tmp_path):
    path = tmp_path / "big.yaml"
    path.write_text(SCENARIO.replace("resources: {cpu: 2, memory: 1Gi}", "resources: {cpu: 3, memory: 1Gi}"))
    result = kpa("simulate", path, "--out", tmp_path / "out")
    assert result.returncode == 2
    assert "big.yaml:" in result.stderr and "'reports' asks 3000 m CPU" in result.stderr
    assert "add a bigger node or lower its requests" in result.stderr
