"""Soak: `kpa up` for an hour at ~80 % of its measured capacity, with scale cycles and random pod kills.

    .venv/bin/python benchmarks/bench_soak.py [--duration 3600] [--out soak-out] [--seed 1]
    .venv/bin/python benchmarks/bench_soak.py --duration 120          # a quick check

1. **Capacity**: one `kpa up` (sample app, 10 ms per request, cc 4, target 2, 1–4 pods, burst capacity
   5 so the activator moves in and out of the path) is loaded closed-loop by 32 raw keep-alive clients
   until it runs 4 pods; the answers per second over the last part of that run are its capacity.
2. **Soak**: on the same stack, 64 raw clients paced to ``--load`` (0.8) of that capacity for half of
   each ``--cycle`` and to a quarter of that for the other half, so the revision scales up and down
   (and flips between proxy and serve mode) every cycle; every ``--kill-every`` seconds a random
   pod's user container or queue-proxy (alternately) is SIGKILLed.
3. **Samples** every ``--sample`` seconds: requests sent/answered/lost, answers by code, p50/p99 of the
   answers in that interval, ready pods and mode, and the RSS and open descriptors of `kpa up` and of
   every pod process. ``OUT/soak.csv`` has one row per sample, ``OUT/processes.csv`` one row per
   process per sample, ``OUT/soak.png`` plots them.

Verdicts (exit status 1 if any fails): every request sent got exactly one complete answer, 2xx or a
documented 502/503/504 (the harness of benchmarks/conservation.py); after the warm-up (the first
``--warmup`` seconds, default a quarter of the run up to 300 s) the RSS and descriptor counts of `kpa
up` and of each process alive through most of the rest of the run grow by at most 5 % (the maximum
over the first whole scale cycle against the last; runs shorter than six cycles use shorter cycles);
and p99 per window (``--window``) stays within 3x
the median window's.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import random
import statistics
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import uvloop
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine
from conservation import MARGIN, TIMEOUT_SECONDS, KpaUp, Phase, RawClients, Tally, sample_app, stack_yaml

from kpa.load import percentile

STACK = stack_yaml(
    "soak",
    sample_app(0.01),
    4,
    {"target": "2", "min-scale": "1", "max-scale": "4", "target-burst-capacity": "5"},
)
CAPACITY_CLIENTS = 32
SOAK_CLIENTS = 64
GROWTH_LIMIT = 0.05
P99_SPREAD = 3.0


@dataclass
class Sample:
    t: float
    rate: float
    sent: int
    answered: int
    lost: int
    codes: Counter[int]
    p50: float
    p99: float
    ready_pods: int
    mode: str
    kpa_rss: int
    kpa_fds: int
    processes: dict[int, tuple[str, int, int]] = field(default_factory=dict)  # pid -> (role, rss, fds)


async def measure_capacity(up: KpaUp, seconds: float, console: Console) -> float:
    """Closed-loop answers per second once the revision runs its 4 pods (the last half of ``seconds``
    after they are up)."""
    clients = RawClients(up.entry, "soak", TIMEOUT_SECONDS + MARGIN)
    clients.set_phase(Phase(CAPACITY_CLIENTS, 120))
    run = asyncio.create_task(clients.run(CAPACITY_CLIENTS))
    deadline = time.monotonic() + 60
    while up.row(await up.status())["ready_pods"] < 4:
        if time.monotonic() > deadline:
            console.print("capacity: the revision never reached 4 pods in 60 s; measuring with what runs")
            break
        await asyncio.sleep(0.25)
    await asyncio.sleep(seconds / 2)
    counted_from = time.monotonic() - clients.started
    await asyncio.sleep(seconds / 2)
    counted_to = time.monotonic() - clients.started
    clients.set_phase(None)
    tally = await run
    problems = tally.violations()
    if problems:
        raise SystemExit("capacity run broke conservation:\n" + "\n".join(problems[:20]))
    answered = sum(
        1 for t, lat in zip(tally.sent_at, tally.latency, strict=True) if counted_from <= t + lat < counted_to
    )
    return answered / (counted_to - counted_from)


def processes(up: KpaUp, pods: dict[int, str]) -> dict[int, tuple[str, int, int]]:
    found: dict[int, tuple[str, int, int]] = {}
    for pid, role in [(up.pid, "kpa up"), *pods.items()]:
        try:
            process = psutil.Process(pid)
            found[pid] = (role, process.memory_info().rss, process.num_fds())
        except psutil.Error:
            continue
    return found


async def pod_roles(up: KpaUp) -> dict[int, str]:
    roles: dict[int, str] = {}
    for pod in await up.pods():
        roles[pod.queue_proxy] = "queue-proxy"
        roles[pod.user] = "user container"
    return roles


def interval_stats(tally: Tally, start: int) -> tuple[float, float]:
    values = sorted(tally.latency[start:])
    if not values:
        return float("nan"), float("nan")
    return percentile(values, 50), percentile(values, 99)


async def soak(
    args: argparse.Namespace, up: KpaUp, capacity: float, console: Console
) -> tuple[Tally, list[Sample], list[str]]:
    high = args.load * capacity
    low = high / 4
    half = args.cycle / 2
    phases: list[Phase] = []
    t = 0.0
    while t < args.duration:
        for rate in (high, low):
            seconds = min(half, args.duration - t)
            if seconds > 0:
                phases.append(Phase(SOAK_CLIENTS, seconds, rate=rate))
                t += seconds
    clients = RawClients(up.entry, "soak", TIMEOUT_SECONDS + MARGIN)
    rng = random.Random(args.seed)
    events: list[str] = []
    samples: list[Sample] = []
    current = {"rate": high}

    async def drive() -> None:
        try:
            for phase in phases:
                current["rate"] = phase.rate or 0.0
                clients.set_phase(phase)
                await asyncio.sleep(phase.seconds)
        finally:
            clients.set_phase(None)

    async def kill() -> None:
        which = "user"
        while True:
            await asyncio.sleep(args.kill_every)
            try:
                line = await up.kill(which, rng.choice)
            except AssertionError as exc:
                line = str(exc)
            events.append(f"{time.monotonic() - clients.started:.1f}s {line}")
            which = "queue-proxy" if which == "user" else "user"

    async def sample(progress: Progress, task) -> None:
        seen = 0
        last_sent = last_answered = last_lost = 0
        last_codes: Counter[int] = Counter()
        while True:
            await asyncio.sleep(args.sample)
            tally = clients.tally
            status = await up.status()
            row = up.row(status)
            p50, p99 = interval_stats(tally, seen)
            seen = len(tally.latency)
            procs = processes(up, await pod_roles(up))
            _, kpa_rss, kpa_fds = procs.get(up.pid, ("kpa up", 0, 0))
            codes = tally.codes - last_codes
            samples.append(
                Sample(
                    time.monotonic() - clients.started, current["rate"], tally.sent - last_sent,
                    tally.answered - last_answered, len(tally.lost) - last_lost, codes, p50, p99,
                    row["ready_pods"], row["mode"], kpa_rss, kpa_fds, procs,
                )
            )  # fmt: skip
            last_sent, last_answered, last_lost = tally.sent, tally.answered, len(tally.lost)
            last_codes = Counter(tally.codes)
            progress.update(
                task,
                completed=min(args.duration, time.monotonic() - clients.started),
                description=(
                    f"sent {tally.sent:,} lost {len(tally.lost)} p99 {p99 * 1000:.0f} ms "
                    f"pods {row['ready_pods']} {row['mode']} kpa up {kpa_rss / 2**20:.0f} MiB {kpa_fds} fds"
                ),
            )

    columns = (TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console) as progress:
        task = progress.add_task("starting", total=args.duration)
        clients.set_phase(phases[0])
        helpers = [asyncio.create_task(coro) for coro in (drive(), kill(), sample(progress, task))]
        try:
            tally = await clients.run(SOAK_CLIENTS)
        finally:
            for helper in helpers:
                helper.cancel()
    return tally, samples, events


def growth(points: list[tuple[float, float]], cycle: float) -> float | None:
    """Growth of a process's figure from the first to the last whole scale cycle in ``points`` (t, value):
    each cycle's maximum, so both sides include a high-load half (descriptors follow the load: pooled
    connections to more pods). None when fewer than two whole cycles were sampled."""
    by_cycle: dict[int, list[float]] = {}
    for t, value in points:
        by_cycle.setdefault(int(t // cycle), []).append(value)
    whole = sorted(
        c for c in by_cycle if points[0][0] <= c * cycle and (c + 1) * cycle <= points[-1][0] + 1e-6
    )
    if len(whole) < 2:
        return None
    first, last = max(by_cycle[whole[0]]), max(by_cycle[whole[-1]])
    return last / first - 1 if first else 0.0


def verdicts(
    args: argparse.Namespace, tally: Tally, samples: list[Sample], up_pid: int
) -> list[tuple[str, bool, str]]:
    found: list[tuple[str, bool, str]] = []
    problems = tally.violations()
    found.append(
        ("conservation", not problems,
         f"{tally.sent:,} sent, {tally.answered:,} answered, {len(tally.lost)} lost, errors {tally.errors()}")
    )  # fmt: skip
    after = [s for s in samples if s.t >= args.warmup]
    if len(after) < 4:
        found.append(("flat RSS/fds", False, f"only {len(after)} samples after the {args.warmup:g}s warm-up"))
        return found
    lifetimes: dict[int, list[Sample]] = {}
    for s in after:
        for pid in s.processes:
            lifetimes.setdefault(pid, []).append(s)
    for pid, seen in sorted(lifetimes.items(), key=lambda item: -len(item[1])):
        if len(seen) < max(4, len(after) // 2):
            continue  # not long-lived: scaled away or killed
        role = seen[0].processes[pid][0]
        for index, unit in ((1, "RSS"), (2, "fds")):
            g = growth([(s.t, float(s.processes[pid][index])) for s in seen], args.cycle)
            if g is None:
                if pid == up_pid:  # a run too short to judge kpa up itself is a failed run
                    found.append((f"{role} {pid} {unit}", False, "fewer than two whole cycles sampled"))
                continue  # a pod that lived less than two whole cycles: not long-lived
            detail = f"{g * 100:+.1f} % from the first to the last whole cycle after warm-up"
            found.append((f"{role} {pid} {unit}", g <= GROWTH_LIMIT, detail))
    windows: dict[int, list[float]] = {}
    for s in after:
        windows.setdefault(int(s.t // args.window), []).append(s.p99)
    window_p99 = [
        max(v for v in values if v == v) for values in windows.values() if any(v == v for v in values)
    ]
    if window_p99:
        median = statistics.median(window_p99)
        worst = max(window_p99)
        spread = f"median {median * 1000:.1f} ms, worst {worst * 1000:.1f} ms"
        detail = f"{len(window_p99)} windows of {args.window:g}s: {spread}"
        found.append(("p99 per window", worst <= P99_SPREAD * median, detail))
    return found


def write_outputs(out: Path, samples: list[Sample], events: list[str]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    codes = sorted({code for s in samples for code in s.codes})
    with (out / "soak.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["t", "target_rps", "sent", "answered", "lost", *[f"code_{c}" for c in codes],
                         "p50_ms", "p99_ms", "ready_pods", "mode", "kpa_up_rss_mib",
                         "kpa_up_fds"])  # fmt: skip
        for s in samples:
            by_code = [s.codes.get(c, 0) for c in codes]
            writer.writerow(
                [f"{s.t:.1f}", f"{s.rate:.0f}", s.sent, s.answered, s.lost, *by_code,
                 f"{s.p50 * 1000:.2f}", f"{s.p99 * 1000:.2f}", s.ready_pods, s.mode,
                 f"{s.kpa_rss / 2**20:.2f}", s.kpa_fds]
            )  # fmt: skip
    with (out / "processes.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["t", "pid", "role", "rss_mib", "fds"])
        for s in samples:
            for pid, (role, rss, fds) in sorted(s.processes.items()):
                writer.writerow([f"{s.t:.1f}", pid, role, f"{rss / 2**20:.2f}", fds])
    (out / "events.txt").write_text("\n".join(events) + "\n")
    plot(out / "soak.png", samples, events)


def plot(path: Path, samples: list[Sample], events: list[str]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = [s.t for s in samples]
    fig, (ax1, ax2, ax3) = plt.subplots(3, 1, figsize=(11, 9), sharex=True)
    interval = [b.t - a.t for a, b in zip([samples[0], *samples], samples, strict=False)]
    interval[0] = samples[0].t if samples else 1.0
    ax1.plot(
        t,
        [s.answered / max(dt, 1e-9) for s, dt in zip(samples, interval, strict=True)],
        label="answered req/s",
    )
    ax1.plot(t, [s.rate for s in samples], "--", label="target req/s")
    ax1b = ax1.twinx()
    ax1b.plot(t, [s.p99 * 1000 for s in samples], color="tab:red", alpha=0.6, label="p99 ms")
    ax1b.set_ylabel("p99 ms")
    ax1.set_ylabel("req/s")
    ax1.legend(loc="upper left")
    ax1b.legend(loc="upper right")
    ax2.plot(t, [s.kpa_rss / 2**20 for s in samples], label="kpa up RSS MiB")
    ax2.set_ylabel("RSS MiB")
    ax2b = ax2.twinx()
    ax2b.plot(t, [s.kpa_fds for s in samples], color="tab:green", label="kpa up fds")
    ax2b.set_ylabel("open fds")
    ax2.legend(loc="upper left")
    ax2b.legend(loc="upper right")
    ax3.step(t, [s.ready_pods for s in samples], where="post", label="ready pods")
    ax3.plot(t, [1 if s.mode == "proxy" else 0 for s in samples], ".", ms=3, label="activator in path")
    for event in events:
        if "SIGKILL" in event:
            ax3.axvline(float(event.split("s", 1)[0]), color="tab:red", alpha=0.3)
    ax3.set_ylabel("pods")
    ax3.set_xlabel("seconds (red lines: SIGKILLs)")
    ax3.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


async def main(args: argparse.Namespace) -> int:
    console = Console()
    console.print(f"machine: {machine()}")
    async with KpaUp(STACK, Path(args.out) / "kpa-up", revision="soak") as up:  # its log and pod logs
        capacity = await measure_capacity(up, args.capacity_seconds, console)
        console.print(
            f"capacity: {capacity:,.0f} answers/s with 4 pods; soak at {args.load:.0%} = "
            f"{args.load * capacity:,.0f} req/s and a quarter of that, cycle {args.cycle:g}s"
        )
        before = up.usage()
        tally, samples, events = await soak(args, up, capacity, console)
        after = up.usage()
    console.print(
        f"kpa up RSS {before.rss / 2**20:.1f} → {after.rss / 2**20:.1f} MiB, fds {before.fds} → {after.fds}; "
        f"{len([e for e in events if 'SIGKILL' in e])} kills"
    )
    write_outputs(Path(args.out), samples, events)
    p50, p99 = tally.percentiles()
    console.print(f"p50 {p50 * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms over {tally.answered:,} answers")
    failed = False
    for name, ok, detail in verdicts(args, tally, samples, up.pid):
        failed |= not ok
        console.print(f"{'[green]ok  ' if ok else '[red]FAIL'}[/] {name}: {detail}")
    for lost in tally.lost[:20]:
        console.print(f"  lost: {lost}")
    console.print(f"wrote {args.out}/soak.csv, processes.csv, events.txt, soak.png")
    return 1 if failed else 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=3600.0, help="soak seconds (default 3600)")
    parser.add_argument("--load", type=float, default=0.8, help="fraction of capacity at the high phase")
    parser.add_argument("--cycle", type=float, default=60.0, help="seconds of one high + low scale cycle")
    parser.add_argument("--kill-every", type=float, default=30.0, help="seconds between pod kills")
    parser.add_argument("--sample", type=float, default=5.0, help="seconds between samples")
    parser.add_argument("--window", type=float, default=None, help="p99 window seconds (default duration/20)")
    parser.add_argument("--warmup", type=float, default=None, help="seconds left out of the flatness checks")
    parser.add_argument("--capacity-seconds", type=float, default=10.0, help="length of the capacity run")
    parser.add_argument("--seed", type=int, default=1, help="seed of the kill choices")
    parser.add_argument("--out", default="soak-out", help="directory for soak.csv, processes.csv, soak.png")
    args = parser.parse_args(argv)
    if args.duration < 6 * args.cycle:
        args.cycle = args.duration / 6  # at least two whole cycles after the warm-up to compare
    args.window = args.window or max(args.cycle, args.duration / 20)
    args.warmup = args.warmup if args.warmup is not None else min(300.0, args.duration / 4)
    return args


if __name__ == "__main__":
    sys.exit(uvloop.run(main(parse_args())))
