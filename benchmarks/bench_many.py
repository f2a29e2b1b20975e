"""Many functions at real scale: the 200-function Azure sample replayed as 200 revisions.

Runs examples/scenarios/many/azure-day.yaml (a full day, 8 shared nodes) on one core and prints the
wall time, the simulated requests per wall-second, the revision-seconds ticked and the load average
before and after (other sessions may share the machine). ``--minutes`` shortens the day;
``--no-skip`` ticks every revision every second (the slow path the idle skip is checked against);
``--profile`` prints cProfile's top functions.

    .venv/bin/python benchmarks/bench_many.py [--minutes 1440] [--no-skip] [--no-cluster] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
from pathlib import Path

from _common import machine

from simulation.many import ManySimulation
from simulation.many_scenario import load_many

SCENARIO = Path(__file__).parents[1] / "examples" / "scenarios" / "many" / "azure-day.yaml"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--minutes", type=int, default=1440)
    parser.add_argument("--no-skip", action="store_true", help="tick every revision every second")
    parser.add_argument("--no-cluster", action="store_true", help="room for every pod (no shared nodes)")
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    overrides = {"duration": args.minutes * 60}
    scenario = load_many(SCENARIO, overrides)
    if args.no_cluster:
        scenario = type(scenario)(scenario.duration, scenario.revisions, None, scenario.warmup, scenario.seed)
    print(machine())
    before = os.getloadavg()
    run = ManySimulation(scenario, skip_idle=not args.no_skip)
    if args.profile:
        profiler = cProfile.Profile()
        profiler.runcall(run.run)
        pstats.Stats(profiler).sort_stats("tottime").print_stats(20)
    else:
        run.run()
    after = os.getloadavg()
    requests = run.arrivals
    pending = sum(p.pending.pods for p in run.placements if p is not None)
    print(
        f"{len(scenario.revisions)} revisions, {args.minutes} simulated minutes, "
        f"{'no cluster' if scenario.nodes is None else f'{len(scenario.nodes)} nodes'}, "
        f"idle skip {'off' if args.no_skip else 'on'}\n"
        f"requests {requests:,}  wall {run.wall_seconds:.1f} s  "
        f"requests/wall-s {requests / run.wall_seconds:,.0f}\n"
        f"revision-seconds ticked {run.revision_ticks:,} of {len(scenario.revisions) * args.minutes * 60:,}  "
        f"pods that waited for room {pending:,}\n"
        f"load average before {before[0]:.2f} {before[1]:.2f} {before[2]:.2f}, "
        f"after {after[0]:.2f} {after[1]:.2f} {after[2]:.2f}"
    )


if __name__ == "__main__":
    main()
