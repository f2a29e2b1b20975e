"""`kpa validate` names each failed request on both sides: when it was sent, in which phase, what it got, why.

"failed 1" alone cannot be acted on: a lost request, a refused one and one that hung until its timeout
count the same, and a hung one also holds concurrency in the autoscaler's windows.
"""

import json
import subprocess
import sys

import pytest
import yaml
from tables import named

from kpa.validate_failures import FailedRequest, Failures, failures_table, phase_label, simulated_reason
from simulation.pods import Request
from simulation.scenario import parse_scenario

# Every request outlives the 1 s revision timeout: the live stack and the simulator both answer 504.
TIMING_OUT = """\
duration: 6
seed: 3
revision:
  container_concurrency: 2
  service_time: {dist: constant, value: 3.0}
  cold_start: {dist: constant, value: 0.3}
  timeout: 1
config: {"stable-window": "6s", "scale-to-zero-grace-period": "1s"}
workload:
  - {type: poisson, rate: 0, duration: 1}
  - {type: constant, rate: 1, duration: 2}
  - {type: poisson, rate: 0, duration: 3}
"""


def test_a_request_that_times_out_live_is_named_in_the_table_and_the_json(tmp_path):
    path = tmp_path / "scenario.yaml"
    path.write_text(TIMING_OUT)
    result = subprocess.run(
        [sys.executable, "-m", "kpa", "validate", str(path), "--out", str(tmp_path / "out"),
         "--replicates", "2", "--failures", "1"],
        capture_output=True, text=True, timeout=45,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    doc = json.loads((tmp_path / "out" / "validate.json").read_text())
    live, simulated = doc["failed_requests"]["live"], doc["failed_requests"]["simulated"]
    assert live["count"] == doc["live"]["failed"] == 2  # sent at 1.0 and 2.0
    assert simulated["count"] == 4  # two per replicate
    assert [f["time"] for f in live["listed"]] == pytest.approx([1.0, 2.0])
    for failure in live["listed"] + simulated["listed"]:
        assert failure["status"] == 504
        assert failure["phase"] == "2: constant 1–3 s"
        assert "timeout" in failure["reason"]
        assert 1.0 <= failure["after"] < 3.0  # cut at the revision timeout, not served
    assert {f["seed"] for f in simulated["listed"]} == {3, 4}
    assert "seed" not in live["listed"][0]
    # The table shows one per side (--failures 1) and counts the rest.
    out = " ".join(result.stdout.split())  # the reason column wraps; the others do not
    assert "failed requests" in out
    assert "│ live │ 1.00 s │ 2: constant 1–3 s │ 504 │" in out
    assert "│ sim, seed 3 │ 1.00 s │ 2: constant 1–3 s │ 504 │" in out
    assert "live: 1 more" in out and "simulated: 3 more" in out


PHASES = [
    ("before the first phase ends", 0.5, "1: poisson 0–1 s"),
    ("at a phase boundary, the next phase", 1.0, "2: constant 1–3 s"),
    ("last phase", 5.9, "3: poisson 3–6 s"),
    ("past the end: the last phase", 7.0, "3: poisson 3–6 s"),
]


@pytest.mark.parametrize(("label", "at", "phase"), named(PHASES))
def test_a_failed_request_is_placed_in_the_workload_phase_it_was_sent_in(label, at, phase):
    workload = parse_scenario(yaml.safe_load(TIMING_OUT)).workload
    assert phase_label(workload, at) == phase


def _request(proxied=False, granted=False, at_pod=False, started=False) -> Request:
    request = Request(1.0, 2.0, 0.5)
    request.proxied = proxied
    request.grant = object() if granted else None  # type: ignore[assignment]
    request.pod = object() if at_pod else None  # type: ignore[assignment]
    request.start = 1.5 if started else -1.0
    return request


REASONS = [
    ("activator queue full", _request(proxied=True), False, 503, "activator: queue full"),
    ("pod refused a proxied request", _request(proxied=True, granted=True), False, 503, "queue-proxy"),
    ("pod refused a direct request", _request(), False, 503, "queue-proxy: pending request queue full"),
    ("held at the activator", _request(proxied=True), True, 504, "activator request timeout"),
    ("queued at the pod", _request(at_pod=True), True, 504, "while queued"),
    ("in service", _request(at_pod=True, started=True), True, 504, "still in service"),
]


@pytest.mark.parametrize(("label", "request_", "timed_out", "status", "words"), named(REASONS))
def test_a_simulated_failure_is_named_by_where_the_request_was(label, request_, timed_out, status, words):
    got_status, reason = simulated_reason(request_, timed_out)
    assert got_status == status and words in reason


def test_failures_past_the_limit_are_counted_not_kept_and_the_table_says_how_many_more():
    live, simulated = Failures(limit=2), Failures(limit=2)
    for i in range(5):
        live.add(FailedRequest(float(i), 0, "1: poisson 0–5 s", "timeout", 65.0))
    other = Failures(limit=1)
    for seed in (1, 2):
        other.add(FailedRequest(1.0, 503, "1: poisson 0–5 s", "queue-proxy: full", 0.0, seed))
    simulated.extend(other)
    assert (live.count, len(live.kept)) == (5, 2)
    assert simulated.to_json()["count"] == 2 and simulated.to_json()["not_listed"] == 1
    table = failures_table(live, simulated, shown=1)
    assert table is not None and table.row_count == 2
    assert (
        table.caption
        == "live: 4 more (validate.json lists up to 2); simulated: 1 more (validate.json lists up to 2)"
    )
    assert failures_table(Failures(), Failures()) is None
