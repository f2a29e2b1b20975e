"""``kpa compare``: every policy on the same arrivals, compare.json keyed by the ``--policy`` values as
given, and what users rely on — the HPA never reaches zero, the KPA idles at zero and costs less on an
idle-heavy trace, a failing policy is named."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from kpa.cli import main

ROOT = Path(__file__).resolve().parents[2]
WARM_POOL = f"{ROOT}/examples/policies/warm_pool.py:WarmPool"
IDLE_HEAVY = {
    "duration": 1800,
    "seed": 3,
    "revision": {
        "container_concurrency": 1,
        "service_time": {"dist": "exponential", "mean": 0.2},
        "cold_start": {"dist": "constant", "value": 2.0},
    },
    "workload": [{"type": "on_off", "rate": 4, "on": 60, "off": 540, "duration": 1800}],
}
REPORT_KEYS = {"requests", "completed", "rejected", "timed_out", "latency", "wait", "cold_start_requests",
               "pod_seconds", "ready_pods", "scale_events", "simulated_seconds", "wall_seconds"}  # fmt: skip


def test_compare_runs_each_policy_on_the_same_arrivals_and_writes_json_and_png(tmp_path, capsys):
    scenario = tmp_path / "idle.yaml"
    scenario.write_text(yaml.safe_dump(IDLE_HEAVY))
    policies = ["kpa", "hpa", "keda-http", WARM_POOL]
    args = ["compare", str(scenario), *(f"--policy={p}" for p in policies), "--out", str(tmp_path / "out")]
    assert main(args) == 0
    results = json.loads((tmp_path / "out" / "compare.json").read_text())
    assert list(results) == policies
    for report in results.values():
        assert set(report) >= REPORT_KEYS and isinstance(report["time_at_zero"], float)
    assert len({r["requests"] for r in results.values()}) == 1 and results["kpa"]["requests"] > 500
    kpa, hpa, keda = results["kpa"], results["hpa"], results["keda-http"]
    assert hpa["time_at_zero"] == 0.0 and hpa["ready_pods"]["max"] >= 1
    assert kpa["time_at_zero"] > 600 and kpa["pod_seconds"] < hpa["pod_seconds"]
    assert keda["time_at_zero"] > 0 and results[WARM_POOL]["time_at_zero"] == 0.0
    assert (tmp_path / "out" / "compare.png").stat().st_size > 10_000
    table = capsys.readouterr().out
    assert "time at zero" in table and "keda-http" in table and "pod-seconds" in table


def test_a_policy_that_fails_during_the_run_is_named(tmp_path, capsys):
    module = tmp_path / "late.py"
    module.write_text("class Late:\n    def __init__(self, settings, now): pass\n"
                      "    def decide(self, seen):\n        return 'many'\n")  # fmt: skip
    scenario = tmp_path / "idle.yaml"
    scenario.write_text(yaml.safe_dump(IDLE_HEAVY))
    assert main(["compare", str(scenario), "--policy", f"{module}:Late", "--out", str(tmp_path / "out")]) == 2
    assert f"policy {module}:Late returned 'many'" in capsys.readouterr().err.replace("\n", "")
