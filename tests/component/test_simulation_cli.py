"""`kpa simulate` and `kpa sweep` as a user runs them: real child processes, files on disk."""

import csv
import json
import subprocess
import sys
import time

import pytest

REPORT_KEYS = {
    "requests", "completed", "rejected", "timed_out", "latency", "wait", "cold_start_requests",
    "pod_seconds", "ready_pods", "scale_events", "simulated_seconds", "wall_seconds",
}  # fmt: skip
TIMELINE_COLUMNS = {
    "second", "desired_pods", "ready_pods", "mode", "panicking", "stable_concurrency", "panic_concurrency",
    "arrivals", "completions", "rejections",
}  # fmt: skip

SCENARIO = """\
duration: 120
warmup: 10
seed: 3
revision:
  container_concurrency: 2
  queue_depth: 20
  service_model: parallel
  service_time: {dist: exponential, mean: 0.2}
  cold_start: {dist: constant, value: 2.0}
  routing: random
  timeout: 300
  annotations: {"autoscaling.knative.dev/target-burst-capacity": "0"}
config: {"stable-window": "30s"}
workload:
  - {type: poisson, rate: 0, duration: 20}
  - {type: poisson, rate: 30, duration: 60}
  - {type: poisson, rate: 0, duration: 40}
"""


def kpa(*args, timeout=60):
    return subprocess.run(
        [sys.executable, "-m", "kpa", *map(str, args)], capture_output=True, text=True, timeout=timeout
    )


# `kpa ...` in a child whose address space is capped (a runaway allocation fails there, not on the
# machine) and which prints its peak resident set (VmHWM, kB) as its last stderr line.
BOUNDED_KPA = """\
import resource, sys
resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))
from kpa.cli import main
code = main(sys.argv[1:])
peak = next(line for line in open("/proc/self/status") if line.startswith("VmHWM"))
print("peak_kb", peak.split()[1], file=sys.stderr)
sys.exit(code)
"""


def kpa_bounded(*args, timeout=60):
    """Run kpa with at most 3 GiB of address space; returns (result, peak RSS in MB or None)."""
    result = subprocess.run(
        [sys.executable, "-c", BOUNDED_KPA, *map(str, args)], capture_output=True, text=True, timeout=timeout
    )
    lines = result.stderr.strip().splitlines()
    peak = int(lines[-1].split()[1]) / 1024 if lines and lines[-1].startswith("peak_kb") else None
    return result, peak


def quiet(duration):
    return (
        f"duration: {duration}\nrevision:\n  service_time: {{dist: constant, value: 0.1}}\n"
        f"workload:\n  - {{type: poisson, rate: 0, duration: {duration}}}\n"
    )


@pytest.fixture
def scenario(tmp_path):
    path = tmp_path / "scenario.yaml"
    path.write_text(SCENARIO)
    return path


def test_simulate_writes_report_timeline_and_plot(scenario, tmp_path):
    out = tmp_path / "out"
    result = kpa("simulate", scenario, "--out", out)
    assert result.returncode == 0, result.stderr
    report = json.loads((out / "report.json").read_text())
    assert report.keys() >= REPORT_KEYS
    assert set(report["latency"]) == {"mean", "p50", "p95", "p99"} and set(report["wait"]) == {"mean", "p95"}
    assert report["requests"] == report["completed"] + report["rejected"] + report["timed_out"] > 1000
    assert report["latency"]["p50"] <= report["latency"]["p95"] <= report["latency"]["p99"]
    assert report["ready_pods"]["max"] >= 3 and report["scale_events"] >= 2
    assert report["simulated_seconds"] == 120
    with (out / "timeline.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert rows[0].keys() >= TIMELINE_COLUMNS
    assert len(rows) == 120
    assert sum(int(r["arrivals"]) for r in rows[10:]) == report["requests"]
    assert max(int(r["ready_pods"]) for r in rows) == report["ready_pods"]["max"]
    assert (out / "timeline.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "latency" in result.stdout


def test_seed_option_changes_the_run_and_repeats_it(scenario, tmp_path):
    runs = {}
    for name, seed in (("a", 11), ("b", 11), ("c", 12)):
        result = kpa("simulate", scenario, "--out", tmp_path / name, "--seed", seed, "--no-plot")
        assert result.returncode == 0
        report = json.loads((tmp_path / name / "report.json").read_text())
        runs[name] = (report["requests"], report["latency"]["mean"])
    assert runs["a"] == runs["b"] != runs["c"]


def test_bad_scenario_is_rejected_with_the_key_path(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(SCENARIO.replace("dist: exponential", "dist: weird"))
    result = kpa("simulate", path, "--out", tmp_path / "out")
    assert result.returncode == 2
    expected = 'service_time.dist="weird": expected one of exponential, constant, lognormal, empirical'
    assert expected in " ".join(result.stderr.split())
    assert not (tmp_path / "out" / "report.json").exists()


def test_sweep_runs_every_cell_and_plots_cost_against_p99(scenario, tmp_path):
    out = tmp_path / "sweep"
    result = kpa(
        "sweep",
        scenario,
        "--grid",
        "revision.annotations.autoscaling.knative.dev/target=1,2",
        "--grid",
        "revision.routing=random,round_robin",
        "--out",
        out,
        "--jobs",
        "2",
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    with (out / "sweep.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    target = "revision.annotations.autoscaling.knative.dev/target"
    cells = {(r[target], r["revision.routing"]) for r in rows}
    assert cells == {("1", "random"), ("1", "round_robin"), ("2", "random"), ("2", "round_robin")}
    by_target = {r[target]: float(r["pod_seconds"]) for r in rows}
    assert by_target["1"] > by_target["2"]  # a lower target buys more pods
    assert (out / "pareto.png").read_bytes()[:4] == b"\x89PNG"
    assert len(list((out / "cells").glob("*/report.json"))) == 4


def test_sweep_rejects_a_bad_grid_before_running(scenario, tmp_path):
    result = kpa("sweep", scenario, "--grid", "revision.routing=random,sideways", "--out", tmp_path / "s")
    assert result.returncode == 2
    expected = 'revision.routing="sideways": expected one of random, round_robin'
    assert expected in " ".join(result.stderr.split())


def test_a_billion_quiet_seconds_are_refused_at_once_naming_the_key(tmp_path):
    path = tmp_path / "long.yaml"
    path.write_text(quiet(1_000_000_000))
    started = time.monotonic()
    result, peak = kpa_bounded("simulate", path, "--out", tmp_path / "out")
    assert result.returncode == 2, result.stderr[-2000:]
    assert time.monotonic() - started < 20 and peak is not None and peak < 500
    message = " ".join(result.stderr.split())
    assert f"{path}:1:1: duration=1000000000: above the 10,000,000-second limit of one simulation" in message
    assert "shorten duration" in message
    assert not (tmp_path / "out" / "report.json").exists()


def test_ten_million_requests_a_second_are_refused_at_once_naming_the_key(tmp_path):
    path = tmp_path / "flood.yaml"
    path.write_text(quiet(3600).replace("rate: 0", "rate: 1e7"))
    started = time.monotonic()
    result, peak = kpa_bounded("simulate", path, "--out", tmp_path / "out")
    assert result.returncode == 2, result.stderr[-2000:]
    assert time.monotonic() - started < 20 and peak is not None and peak < 500
    message = " ".join(result.stderr.split())
    assert (
        f'{path}:5:21: workload[0].rate="1e7" x duration=3600 ≈ 3.6e+10 requests: above the '
        "100,000,000-request limit of one simulation; shorten duration or lower the rate"
    ) in message


def test_a_long_quiet_run_streams_its_timeline_in_flat_memory(tmp_path):
    peaks = {}
    for duration in (2_000, 200_000):
        path = tmp_path / f"quiet-{duration}.yaml"
        path.write_text(quiet(duration))
        out = tmp_path / f"out-{duration}"
        result, peaks[duration] = kpa_bounded("simulate", path, "--out", out, "--no-plot", timeout=120)
        assert result.returncode == 0, result.stderr[-2000:]
        with (out / "timeline.csv").open() as handle:
            assert sum(1 for _ in handle) == duration + 1  # the header, then one row per simulated second
    assert peaks[200_000] - peaks[2_000] < 40, peaks  # the timeline of 100 x the seconds costs no memory


def test_cli_errors_give_the_file_line_and_column(scenario, tmp_path):
    scenario.write_text(SCENARIO.replace("  timeout: 300\n", "  timeout: 300\n  timeout: 30\n"))
    result = kpa("simulate", scenario, "--out", tmp_path / "out")
    assert result.returncode == 2
    message = " ".join(result.stderr.split())
    assert f"{scenario}:12:3: revision.timeout: duplicate key (also at line 11); keep one" in message
    scenario.write_text(SCENARIO.replace("timeout: 300", "timeout: abc"))
    result = kpa("simulate", scenario, "--out", tmp_path / "out")
    assert f'{scenario}:11:3: revision.timeout="abc": expected a number' in " ".join(result.stderr.split())


def test_progress_bar_only_when_asked_or_on_a_terminal(scenario, tmp_path):
    quiet_run = kpa("simulate", scenario, "--out", tmp_path / "a", "--no-plot")
    assert quiet_run.returncode == 0 and "simulated s" not in quiet_run.stderr
    shown = kpa("simulate", scenario, "--out", tmp_path / "b", "--no-plot", "--progress")
    assert shown.returncode == 0 and "120/120 simulated s" in shown.stderr and "req/s" in shown.stderr
    sweep = kpa("sweep", scenario, "--grid", "seed=1,2", "--out", tmp_path / "s", "--jobs", "1")
    assert sweep.returncode == 0 and "sweeping" not in sweep.stderr
