"""Simulator throughput: simulated requests per wall-second, ours against SimFaaS 0.2.2, in one run.

Ours: one hour of 200 req/s Poisson arrivals against an autoscaled revision (cc 10, 0.1 s
exponential service), once with Knative's defaults (TBC 211 keeps the activator in the path at this
size, so every request passes two breakers) and once with TBC 0, with the real autoscaler core
deciding every 2 s, the real queue-proxy breaker in every pod and the real activator throttler.

SimFaaS 0.2.2, twice, on its README's default scenario (warm 1.991 s, cold 2.244 s, 600 s
expiration): at its default arrival rate, 0.9/s, run long enough to see about as many requests as
ours (one or two instances at a time: its cheapest case), and at our traffic, 200 req/s, for a
bounded horizon (``--simfaas-seconds``, default 300 simulated seconds, about 60,000 requests), where
it keeps hundreds of instances and its cost per event grows with them. SimFaaS models no autoscaler,
no queues and no concurrency limit, so it does strictly less work per request.

    .venv/bin/pip install simfaas==0.2.2   # benchmark only, not a project dependency
    .venv/bin/python benchmarks/bench_simulator.py [--hours 1] [--simfaas-seconds 300] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import time

from _common import machine

from simulation.engine import Simulation
from simulation.scenario import parse_scenario

RATE = 200.0


def scenario(hours: float, burst_capacity: str | None = None) -> dict:
    """Knative's defaults, or a given target-burst-capacity ("0": the activator leaves the path)."""
    seconds = hours * 3600
    annotations = {}
    if burst_capacity is not None:
        annotations["autoscaling.knative.dev/target-burst-capacity"] = burst_capacity
    return {
        "duration": seconds,
        "seed": 1,
        "revision": {
            "container_concurrency": 10,
            "service_time": {"dist": "exponential", "mean": 0.1},
            "cold_start": {"dist": "constant", "value": 2.0},
            "annotations": annotations,
        },
        "workload": [{"type": "poisson", "rate": RATE, "duration": seconds}],
    }


def run_ours(hours: float, burst_capacity: str | None = None) -> tuple[int, float, Simulation]:
    sim = Simulation(parse_scenario(scenario(hours, burst_capacity)), 1)
    started = time.perf_counter()
    sim.run()
    wall = time.perf_counter() - started
    return sim.arrivals, wall, sim


SIMFAAS_DEFAULT_RATE = 0.9


def run_simfaas(arrival_rate: float, seconds: float) -> tuple[int, float]:
    """SimFaaS's default scenario at ``arrival_rate`` for ``seconds`` simulated: (requests, wall s)."""
    from simfaas.ServerlessSimulator import ServerlessSimulator

    sim = ServerlessSimulator(
        arrival_rate=arrival_rate,
        warm_service_rate=1 / 1.991,
        cold_service_rate=1 / 2.244,
        expiration_threshold=600,
        max_time=seconds,
    )
    started = time.perf_counter()
    sim.generate_trace(debug_print=False, progress=False)
    return sim.total_req_count, time.perf_counter() - started


def _show(title: str, requests: int, wall: float, sim: Simulation) -> None:
    print(
        f"{title}: {requests:,} requests in {wall:.2f} s wall = {requests / wall:,.0f} simulated requests / "
        f"wall-s (completed {sim.counters.completed:,}, peak {max(r.ready_pods for r in sim.timeline)} pods, "
        f"{sim.fleet.scale_events} scale events)"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hours", type=float, default=1.0, help="simulated hours of 200 req/s (default 1)")
    parser.add_argument(
        "--simfaas-seconds",
        type=float,
        default=300.0,
        help="simulated seconds of SimFaaS at 200 req/s (default 300, about 60,000 requests)",
    )
    parser.add_argument("--profile", action="store_true", help="also print where our time goes (cProfile)")
    args = parser.parse_args()

    print(machine())
    requests, wall, sim = run_ours(args.hours)
    ours = requests / wall
    _show("ours, Knative defaults (activator in the path)", requests, wall, sim)
    direct = run_ours(args.hours, "0")
    _show("ours, TBC 0 (straight to the pods)", *direct)
    ours_direct = direct[0] / direct[1]
    baselines = [
        (
            f"SimFaaS default scenario at its default {SIMFAAS_DEFAULT_RATE} req/s",
            SIMFAAS_DEFAULT_RATE,
            requests / SIMFAAS_DEFAULT_RATE,
        ),
        (f"SimFaaS default scenario at our {RATE:.0f} req/s", RATE, args.simfaas_seconds),
    ]
    for title, rate, seconds in baselines:
        try:
            theirs_requests, theirs_wall = run_simfaas(rate, seconds)
        except ImportError:
            print("SimFaaS not installed: .venv/bin/pip install simfaas==0.2.2")
            return 1
        theirs = theirs_requests / theirs_wall
        print(
            f"{title} ({seconds:,.0f} simulated s): {theirs_requests:,} requests in "
            f"{theirs_wall:.2f} s wall = {theirs:,.0f} simulated requests / wall-s"
        )
        print(f"  ratio ours / it: {ours / theirs:.2f}x (defaults), {ours_direct / theirs:.2f}x (TBC 0)")
    print("goals: >= 100,000 simulated requests / wall-s and >= 5x SimFaaS")

    if args.profile:
        profiler = cProfile.Profile()
        profiler.enable()
        run_ours(min(args.hours, 0.25))
        profiler.disable()
        pstats.Stats(profiler).sort_stats("tottime").print_stats(15)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
