"""Issue 15's done-when for many models per pod: 20 small real models on one `kpa predictor` whose memory
budget fits 5, a Zipf request stream of 600 requests: every answer correct, the LRU's hit ratio and load
waits reported, and the simulator's prediction for the same stream close to what the pod did."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[2]


def test_twenty_models_in_a_budget_for_five_serve_a_zipf_stream_as_simulated():
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.bench_model_cache", "--models", "20", "--fit", "5",
         "--requests", "600", "--rate", "100", "--json"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    live, simulated = result["live"], result["simulated"]
    assert live["wrong_or_failed"] == 0 and live["hits"] + live["misses"] == 600
    assert live["evictions"] > 0 and live["loads"] >= 20  # the budget really held fewer than 20
    assert live["load_wait"]["p50"] is not None and live["load_wait"]["p50"] > 0
    # One live stream of 600 requests against ten simulated replicates: within 0.1 of each other.
    assert abs(live["hit_ratio"] - simulated["hit_ratio"]) < 0.1, (live, simulated)
    assert 0.25 < live["hit_ratio"] < 0.7  # Che's approximation for Zipf(1), 20 models, 5 slots: 0.48
