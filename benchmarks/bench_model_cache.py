"""Many models per pod, live vs simulated: a Zipf request stream over N small real models on one
`kpa predictor` whose memory budget fits K of them, and the simulator's prediction for the same stream.

    python -m benchmarks.bench_model_cache                       # 20 models, budget for 5, 600 requests
    python -m benchmarks.bench_model_cache --models 20 --fit 5 --requests 2000 --rate 100 --zipf 1.0
    python -m benchmarks.bench_model_cache --write-repo /tmp/many   # just write the 20-model repository
    python -m benchmarks.bench_model_cache --json                # the figures as JSON (the e2e test reads it)

Every answer is checked against the model run here in torch; the live hit ratio, load waits (from the
``X-Kpa-Model-Load`` headers), loads and evictions come from the predictor itself, and the simulated ones
from a multi-model scenario (simulation.models) with the measured model size, load time and service times
(of the requests that found their model loaded). The LRU
policy is the same code in both (predictor.model_cache).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch

from predictor.demo_models import build_many_models_repository, many_model, many_model_name
from simulation.engine import Simulation
from simulation.report import summarize
from simulation.scenario import parse_scenario

REPLICATES = 10
PS = ("p50", "p95", "p99")


def _percentiles(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p95": None, "p99": None}
    return {f"p{q}": float(np.percentile(values, q)) for q in (50, 95, 99)}


def _start(repository: Path, cache: Path, budget: int) -> tuple[subprocess.Popen, int]:
    command = [
        sys.executable,
        "-m",
        "kpa",
        "predictor",
        "--model-repository",
        str(repository),
        "--port",
        "0",
        "--cache-dir",
        str(cache),
        "--memory-budget",
        str(budget),
        "--log-level",
        "warning",
    ]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    port = 0
    for line in process.stdout:
        event = json.loads(line)
        port = event.get("port", port)  # the first line: listening on it
        if event.get("event") == "ready":
            return process, port
    raise RuntimeError(f"kpa predictor exited with {process.wait()} before it was ready")


def _post(port: int, path: str, body: bytes) -> tuple[int, dict[str, str], bytes]:
    import http.client

    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        connection.request("POST", path, body=body)
        response = connection.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        connection.close()


def run(
    models: int = 20,
    fit: int = 5,
    requests: int = 600,
    rate: float = 100.0,
    zipf_s: float = 1.0,
    seed: int = 1,
    workdir: Path | None = None,
) -> dict[str, Any]:
    """Serve the stream live, simulate it, and return both sides' figures."""
    workdir = Path(workdir or tempfile.mkdtemp(prefix="bench-model-cache-"))
    repository = build_many_models_repository(workdir / "repo", models)
    size = sum(p.numel() * p.element_size() for p in many_model(0).parameters())
    budget = fit * size + size // 2  # room for `fit` models, not one more
    rng = np.random.default_rng(seed)
    weights = 1 / np.arange(1, models + 1) ** zipf_s
    picks = rng.choice(models, size=requests, p=weights / weights.sum()).tolist()
    arrivals = np.cumsum(rng.exponential(1 / rate, size=requests)).tolist()
    x = rng.standard_normal((requests, 16)).astype(np.float32)
    with torch.no_grad():
        nets = [many_model(i) for i in range(models)]
        expected = [nets[m](torch.from_numpy(x[i : i + 1])).numpy().ravel() for i, m in enumerate(picks)]
    process, port = _start(repository, workdir / "cache", budget)
    waits: list[float] = []
    served: list[float] = []  # seconds a request took that found its model loaded: the live service time
    wrong: list[str] = []
    lock = threading.Lock()

    def one(i: int) -> None:
        body = json.dumps(
            {"inputs": [{"name": "x", "shape": [1, 16], "datatype": "FP32", "data": x[i].tolist()}]}
        )
        sent = time.monotonic()
        status, headers, answer = _post(port, f"/v2/models/{many_model_name(picks[i])}/infer", body.encode())
        took = time.monotonic() - sent
        with lock:
            if status != 200:
                wrong.append(f"request {i}: {status} {answer[:200]!r}")
                return
            data = json.loads(answer)["outputs"][0]["data"]
            if not np.allclose(data, expected[i], rtol=1e-4, atol=1e-5):
                wrong.append(f"request {i} to {many_model_name(picks[i])}: wrong answer")
            if "x-kpa-model-load" in headers:
                waits.append(float(headers["x-kpa-model-load"]) / 1e3)
            else:
                served.append(took)

    try:
        started = time.monotonic()
        with ThreadPoolExecutor(32) as pool:
            for i, at in enumerate(arrivals):  # open loop: requests leave on their arrival times
                time.sleep(max(0.0, started + at - time.monotonic()))
                pool.submit(one, i)
        live_seconds = time.monotonic() - started
        rows = json.loads(_post(port, "/v2/repository/index", b"")[2])
    finally:
        process.terminate()
        process.wait(30)
    cache = {key: sum(row["cache"][key] for row in rows) for key in ("hits", "misses", "loads", "evictions")}
    load_times = [row["load_seconds"] for row in rows if "load_seconds" in row]
    load_time = float(np.mean(load_times)) if load_times else 0.0
    live = {
        "requests": requests,
        "wrong_or_failed": len(wrong),
        "hit_ratio": cache["hits"] / max(1, cache["hits"] + cache["misses"]),
        **cache,
        "load_wait": _percentiles(waits),
        "seconds": live_seconds,
    }
    simulated = _simulate(models, zipf_s, size, budget, load_time, served, rate, requests, seed)
    return {
        "models": models,
        "fit": fit,
        "model_bytes": size,
        "budget_bytes": budget,
        "load_time_s": load_time,
        "service_time_s": float(np.mean(served)) if served else None,
        "live": live,
        "simulated": simulated,
        "errors": wrong[:5],
    }


def _simulate(
    models: int,
    zipf_s: float,
    size: int,
    budget: int,
    load_time: float,
    served: list[float],
    rate: float,
    requests: int,
    seed: int,
) -> dict[str, Any]:
    """The stream simulated with the live run's measured load time and service times (the requests that
    found their model loaded, as the client timed them): on a busy machine a request holds its model for
    longer, which keeps it from being unloaded and changes what the LRU can do."""
    duration = requests / rate  # the live run's length, from empty pods, over ten seeds (replicates)
    document = {
        "duration": duration,
        "seed": seed,
        "revision": {
            "service_time": (
                {"dist": "empirical", "values": served} if served else {"dist": "constant", "value": 0.001}
            ),
            "cold_start": {"dist": "constant", "value": 0},  # the live predictor is up before the stream
            "annotations": {f"autoscaling.knative.dev/{key}": "1" for key in ("min-scale", "max-scale")},
            "models": {
                "count": models,
                "zipf_s": zipf_s,
                "size": size,
                "memory_budget": budget,
                "load_time": {"dist": "constant", "value": load_time},
            },
        },
        "workload": [{"type": "poisson", "rate": rate, "duration": duration}],
    }
    scenario = parse_scenario(document)
    reports = [summarize(Simulation(scenario, seed=seed + i).run())["models"] for i in range(REPLICATES)]
    counts = ("hits", "misses", "loads", "evictions")
    result: dict[str, Any] = {key: sum(r[key] for r in reports) / REPLICATES for key in counts}
    result["hit_ratio"] = result["hits"] / max(1.0, result["hits"] + result["misses"])
    result["load_wait"] = {
        q: float(np.mean([r["load_wait"][q] for r in reports if r["load_wait"][q] is not None]))
        for q in ("p50", "p95", "p99")
    }
    return result


def _ms(value: float | None) -> str:
    return "—" if value is None else f"{value * 1e3:.1f} ms"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=int, default=20)
    parser.add_argument("--fit", type=int, default=5, help="the budget holds this many models")
    parser.add_argument("--requests", type=int, default=600)
    parser.add_argument("--rate", type=float, default=100.0, help="requests per second (Poisson)")
    parser.add_argument("--zipf", type=float, default=1.0, help="Zipf exponent of the models' popularity")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--write-repo", type=Path, metavar="DIR", help="only write the repository and exit")
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON document")
    args = parser.parse_args(argv)
    if args.write_repo is not None:
        build_many_models_repository(args.write_repo, args.models)
        print(f"wrote {args.models} models to {args.write_repo}")
        return 0
    result = run(args.models, args.fit, args.requests, args.rate, args.zipf, args.seed)
    live, sim = result["live"], result["simulated"]
    if args.json:
        print(json.dumps(result))
        return 0 if live["wrong_or_failed"] == 0 else 1
    print(
        f"{args.models} models of {result['model_bytes']:,} bytes, budget {result['budget_bytes']:,} bytes "
        f"(fits {args.fit}), Zipf s={args.zipf}, {args.requests} requests at {args.rate:g}/s, "
        f"load time {result['load_time_s'] * 1e3:.1f} ms"
    )
    print(
        f"{'':12}{'hit ratio':>10}{'loads':>8}{'evictions':>10}" + "".join(f"{'wait ' + q:>11}" for q in PS)
    )
    for label, side in (("live", live), ("simulated", sim)):
        wait = side["load_wait"]
        print(
            f"{label:12}{side['hit_ratio']:>10.3f}{side['loads']:>8.0f}{side['evictions']:>10.0f}"
            f"{_ms(wait['p50']):>11}{_ms(wait['p95']):>11}{_ms(wait['p99']):>11}"
        )
    print(f"answers wrong or failed: {live['wrong_or_failed']} of {args.requests}")
    return 0 if live["wrong_or_failed"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
