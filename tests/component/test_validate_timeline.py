"""`kpa validate`: live and simulated step down at the same seconds for a load with no chance in it.

Constant arrivals and a constant service time leave nothing random: the simulator's step-downs are
fixed, and the live autoscaler (the same core, on the same ticks) must make them at the same seconds.
Two lags came from the comparison, not from either system: the live rows were read a few milliseconds
before each tick's decision (every live step showed one second after its simulated twin), and the
simulator decided on bucket boundaries with the activator reporting half a second off, where the live
autoscaler buckets by wall-clock second at whatever phase its ticks and the activator's reports fall
(Knative's too), so its window reached up to a second further back; the last step came a tick later.
"""

import itertools
import json
import subprocess
import sys

import numpy as np
import yaml

from kpa.validate import simulate_replicates
from simulation.engine import random_streams
from simulation.scenario import parse_scenario

# 12 req/s of 0.18 s at cc 1 (target 0.7): 3 pods, then the 10 s stable window empties over the idle
# tail: 3 -> 2, 2 -> 1, then 0, each on a 2 s tick. Over every phase the live clocks may have, the
# stable average at each tick of the tail stays at least 4 % away from a pod-count boundary, more than
# the live stack's extra concurrency (its HTTP hops, about 2 %).
STEP_LOAD = """\
duration: 30
seed: 1
revision:
  container_concurrency: 1
  service_time: {dist: constant, value: 0.18}
  cold_start: {dist: constant, value: 0.5}
  timeout: 10
  annotations: {"autoscaling.knative.dev/initial-scale": "0", "autoscaling.knative.dev/max-scale": "3"}
config: {"stable-window": "10s", "scale-to-zero-grace-period": "1s", "allow-zero-initial-scale": "true"}
workload:
  - {type: constant, rate: 12, duration: 12}
  - {type: poisson, rate: 0, duration: 18}
"""


def step_downs(rows: list[dict]) -> list[tuple[int, int]]:
    """(second, ready pods) at each drop in ready pods."""
    return [
        (r["second"], r["ready_pods"])
        for p, r in itertools.pairwise(rows)
        if r["ready_pods"] < p["ready_pods"]
    ]


def test_live_and_simulated_step_downs_fall_on_the_same_seconds(tmp_path):
    path = tmp_path / "step.yaml"
    path.write_text(STEP_LOAD)
    result = subprocess.run(
        [sys.executable, "-m", "kpa", "validate", str(path), "--out", str(tmp_path / "out"),
         "--replicates", "1"],
        capture_output=True, text=True, timeout=45,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    live = step_downs(json.loads((tmp_path / "out" / "live_timeline.json").read_text()))
    doc = json.loads((tmp_path / "out" / "validate.json").read_text())
    phases = {key: doc[key] for key in ("bucket_phase", "activator_report_phase")}
    assert all(0 <= phase < 1 for phase in phases.values())

    scenario = parse_scenario(yaml.safe_load(STEP_LOAD))
    arrivals = np.concatenate(list(scenario.workload.arrivals(np.random.default_rng(random_streams(1)[0]))))
    (sim,) = simulate_replicates(scenario, arrivals.tolist(), 1, 1, **phases)
    simulated = step_downs([{"second": r.second, "ready_pods": r.ready_pods} for r in sim.timeline])
    # Which tick each step lands on depends on those phases (a second's stats may fall into the window
    # or just out of it): 2 pods at 16 s, 1 at 20 or 22 s, none at 24 to 28 s.
    assert [pods for _, pods in simulated] == [2, 1, 0], simulated
    assert live == simulated, phases
