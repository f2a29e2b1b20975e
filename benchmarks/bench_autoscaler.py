"""How much CPU the decision core costs: µs per revision-tick at 10,000 revisions.

Every revision records one stat per simulated second and decides every 2 s, for 5 simulated minutes by
default. A revision-tick is one decision interval of one revision: two stats recorded, the stable and
panic windows averaged, the KPA decision and the life-cycle step. In the same run the benchmark times
the window averaging on its own, and a baseline for it: the same averages recomputed by summing every
bucket of the window on each read (what a non-incremental window would cost).

    python benchmarks/bench_autoscaler.py                       # 10,000 revisions, 5 minutes
    python benchmarks/bench_autoscaler.py --revisions 1000 --minutes 1   # quick run

The goal is ≤ 20 µs per revision-tick: 10,000 revisions decided in ≤ 0.2 s of one core every 2 s.
"""

from __future__ import annotations

import argparse
import gc
import math
import os
import platform
import random
import time
from pathlib import Path

from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from autoscaler.revision import RevisionAutoscaler, settings_from
from autoscaler.stat import Stat

T0 = 1_700_000_000.0
TICK = 2
GOAL_US = 20.0


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def load_pool(size: int, rng: random.Random) -> list[Stat]:
    """Pre-built stats (concurrency 0–300, some proxied) so the timing is the core's, not Stat's."""
    return [
        Stat(
            f"pod-{i}",
            average_concurrent_requests=rng.uniform(0, 300),
            average_proxied_concurrent_requests=rng.choice((0.0, 0.0, 1.5)),
            request_count=rng.uniform(0, 900),
        )
        for i in range(size)
    ]


def naive_average(ring: list[float], now: int, first: int) -> float:
    """The baseline: sum the window's buckets on every read instead of keeping a running total."""
    return sum(ring) / min(now - first + 1, len(ring))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--revisions", type=int, default=10_000, help="revisions decided in parallel")
    parser.add_argument("--minutes", type=float, default=5.0, help="simulated minutes")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    if args.revisions < 1 or args.minutes <= 0:
        parser.error("--revisions must be >= 1 and --minutes > 0")

    console = Console()
    rng = random.Random(args.seed)
    pool = load_pool(4096, rng)
    settings = settings_from()
    revisions = [RevisionAutoscaler(settings, T0, ready_pods=1) for _ in range(args.revisions)]
    ready = [1] * args.revisions
    offsets = [rng.randrange(len(pool)) for _ in range(args.revisions)]
    seconds = int(args.minutes * 60)
    ticks = seconds // TICK

    gc.collect()
    recording = deciding = 0.0
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("simulated seconds", total=seconds)
        for second in range(seconds):
            now = T0 + second + 0.5
            started = time.perf_counter()
            for i, rev in enumerate(revisions):
                rev.record(pool[(offsets[i] + second) & 4095], now)
            recorded = time.perf_counter()
            recording += recorded - started
            if second % TICK == TICK - 1:
                for i, rev in enumerate(revisions):
                    decision = rev.decide(now, ready[i])
                    if decision.apply and decision.desired_pods >= 0:
                        ready[i] = decision.desired_pods
                deciding += time.perf_counter() - recorded
            progress.advance(task)
    core = recording + deciding

    # Window averaging alone, on the windows the run left behind, and the summing baseline.
    now = T0 + seconds - 0.5
    repeats = max(1, min(ticks, 20))
    started = time.perf_counter()
    for _ in range(repeats):
        for rev in revisions:
            rev.observe(now)
    averaging = (time.perf_counter() - started) / repeats
    stable_ring = [rng.random() for _ in range(int(settings.stable_window))]
    panic_ring = [rng.random() for _ in range(int(settings.panic_window))]
    started = time.perf_counter()
    for _ in range(repeats):
        for _rev in revisions:
            naive_average(stable_ring, int(now), int(T0))
            naive_average(panic_ring, int(now), int(T0))
    baseline = (time.perf_counter() - started) / repeats

    per_tick_us = core / (args.revisions * ticks) * 1e6
    averaging_us = averaging / args.revisions * 1e6
    baseline_us = baseline / args.revisions * 1e6
    table = Table(title=f"{args.revisions:,} revisions × {ticks} ticks ({seconds} simulated s)")
    table.add_column("measure")
    table.add_column("µs per revision-tick", justify="right")
    table.add_row("stats recorded + windows averaged + decision", f"{per_tick_us:.2f}")
    table.add_row("  recording 2 stats (4 windows each)", f"{recording / (args.revisions * ticks) * 1e6:.2f}")
    table.add_row(
        "  deciding (averaging + KPA + life cycle)", f"{deciding / (args.revisions * ticks) * 1e6:.2f}"
    )
    table.add_row("  window averaging alone (stable + panic)", f"{averaging_us:.2f}")
    table.add_row("baseline: averaging by summing every bucket", f"{baseline_us:.2f}")
    table.add_row("goal", f"≤ {GOAL_US:.0f}")
    console.print(table)
    console.print(
        f"core time per 2 s tick for all revisions: {per_tick_us * args.revisions / 1e6:.3f} s of one core; "
        f"averaging vs summing baseline: {averaging_us / baseline_us:.2f}×; "
        f"goal {'met' if per_tick_us <= GOAL_US else 'MISSED'} ({per_tick_us / GOAL_US:.2f} of budget)"
    )
    console.print(
        f"machine: {cpu_model()}, {os.cpu_count()} cores, Python {platform.python_version()} "
        f"({platform.python_implementation()})"
    )
    return 0 if math.isfinite(per_tick_us) else 1


if __name__ == "__main__":
    raise SystemExit(main())
