"""``kpa validate SCENARIO.yaml --out DIR [--seed N]``: the scenario live and simulated, side by side.

Live: ``kpa up``'s local stack (autoscaler, activator, real queue-proxy processes) in this process,
one revision whose user container (:mod:`kpa.synthetic_app`) starts and serves with the
scenario's distributions, driven open-loop with the scenario's own arrival times. Simulated: the same
scenario through :class:`~simulation.engine.Simulation`, replicated with successive seeds over the
live run's own arrival times (only the service, start-up and routing draws differ between replicates),
so the live run — one draw of a random process — is held against the model's expectation and spread
rather than against one other draw. Compared: ready pods over time, latency p50/p95, pod-seconds,
cold starts; the goal is agreement within 15 %.

It lives in ``kpa/`` beside ``kpa up`` because it drives the live stack; the simulator itself imports
only the cores (autoscaler core, queue-proxy breaker and stats, the activator's throttler).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import math
import shlex
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from kpa.argtypes import positive_int
from kpa.load import Client, Target
from kpa.validate_failures import (
    DEFAULT_SHOWN,
    FailedRequest,
    Failures,
    NamingSimulation,
    failures_table,
    phase_label,
)
from localbackend.stack import LocalStack
from localbackend.stack_file import parse_stack
from simulation.cli import add_progress_option, figure, load_or_explain, progress_console
from simulation.distributions import Constant, Empirical, Exponential, LogNormal
from simulation.engine import random_streams
from simulation.plots import plot_live_vs_simulated
from simulation.report import summarize
from simulation.scenario import ACTIVATOR_REPORT_PHASE, Scenario
from simulation.workloads import Workload

REVISION = "scenario"
GOAL = 0.15
MAX_LIVE_SECONDS = 1800  # a live run takes its duration in wall time
MAX_LIVE_REQUESTS = 1_000_000  # the live run keeps every request's arrival, latency and status
MAX_LIVE_EMPIRICAL = 5_000  # values passed on the container's command line (one argument: < 128 KiB)
LOCAL_DRAIN_SECONDS = 0.5  # kpa up's queue-proxy quiet period (Knative's 30 s covers endpoint propagation)
LOCAL_ROUTING = "round_robin"  # kpa up's serve mode (activator out of the path) over the ready pods
DEFAULT_REPLICATES = 10
COMPARED = ("latency_p50", "latency_p95", "pod_seconds", "ready_pods_mean", "cold_start_requests")
# The live row for second k is read this far into it. A simulated row is taken just after the decision
# tick at its second; the live autoscaler's ticks fall a few milliseconds after whole seconds of the run
# (its loops start with the load), so a row read at k itself showed the state before that tick's
# decision, and every live step lagged its simulated twin by one row.
LIVE_ROW_PHASE = 0.25


def distribution_json(dist: Exponential | Constant | LogNormal | Empirical) -> str:
    if isinstance(dist, Exponential):
        return json.dumps({"dist": "exponential", "mean": dist.mean})
    if isinstance(dist, Constant):
        return json.dumps({"dist": "constant", "value": dist.value})
    if isinstance(dist, LogNormal):
        return json.dumps({"dist": "lognormal", "mean": dist.mean, "sd": dist.sd})
    return json.dumps({"dist": "empirical", "values": list(dist.values)})


def stack_yaml(scenario: Scenario, seed: int) -> str:
    """The local-stack config for the scenario's revision."""
    rev = scenario.revision
    command = [
        sys.executable, "-m", "kpa.synthetic_app",
        "--service", distribution_json(rev.service_time),
        "--startup", distribution_json(rev.cold_start),
        "--seed", str(seed),
    ]  # fmt: skip
    doc: dict = {
        "config": dict(scenario.config),
        "revisions": [
            {
                "name": REVISION,
                "command": shlex.join(command),
                "containerConcurrency": rev.container_concurrency,
                "annotations": dict(rev.annotations),
                "timeoutSeconds": min(600, math.ceil(rev.timeout)),
                "startupTimeoutSeconds": 600,
            }
        ],
    }
    if scenario.settings.max_scale > 0:
        # Draining pods count toward kpa up's capacity cap: leave them room, so the live run scales as
        # the simulated one (which has no cap) would.
        doc["maxPods"] = scenario.settings.max_scale + 2
    return yaml.safe_dump(doc, sort_keys=False)


def unsupported(scenario: Scenario) -> list[str]:
    """What the live stack cannot reproduce; the run is refused if anything is listed."""
    rev = scenario.revision
    problems = []
    if rev.service_model != "parallel":
        problems.append("revision.service_model: the live user container sleeps; only parallel can run live")
    if rev.container_concurrency and rev.queue_depth != 10 * rev.container_concurrency:
        problems.append("revision.queue_depth: the live queue-proxy always queues 10 x cc")
    if rev.timeout > 600:
        problems.append("revision.timeout: the live stack allows at most 600 s")
    if scenario.duration > MAX_LIVE_SECONDS:
        problems.append(f"duration: a live run takes its duration in wall time; at most {MAX_LIVE_SECONDS} s")
    for key, dist in (("service_time", rev.service_time), ("cold_start", rev.cold_start)):
        if isinstance(dist, Empirical) and len(dist.values) > MAX_LIVE_EMPIRICAL:
            problems.append(
                f"revision.{key}: {len(dist.values):,} empirical values; the live container takes them on "
                f"its command line, at most {MAX_LIVE_EMPIRICAL:,}"
            )
    expected = scenario.workload.expected_requests(scenario.duration)
    if expected > MAX_LIVE_REQUESTS:
        problems.append(
            f"workload: ≈ {expected:,.0f} requests; a live run sends at most {MAX_LIVE_REQUESTS:,} "
            "(one machine's load generator and pods); lower the rate or shorten duration"
        )
    return problems


@dataclass
class LiveRow:
    second: int
    desired_pods: int
    ready_pods: int
    pods: int
    mode: str
    panicking: bool


@dataclass
class LiveResult:
    rows: list[LiveRow]
    arrivals: list[float]  # offsets from the start, seconds
    latencies: list[float]  # -1 for failures
    statuses: list[int]
    cold: list[bool]
    failures: Failures = dataclasses.field(default_factory=Failures)  # those after the warm-up, named
    # Where the live clocks fell (platform.bucket_phase, platform.activator_report_phase): the run's start
    # within its wall-clock second, which is where the autoscaler's ticks fall in its metric buckets, and
    # the activator's report tick after each whole second of the run.
    bucket_phase: float = 0.0
    activator_report_phase: float = ACTIVATOR_REPORT_PHASE


async def run_live(scenario: Scenario, seed: int, on_second=None) -> LiveResult:
    stack = LocalStack(parse_stack(stack_yaml(scenario, seed), source="<validate>"), port=0, admin_port=0)
    await stack.start()
    client = Client(
        Target.from_url(stack.entry_url + "/", host_header=REVISION), timeout=scenario.revision.timeout + 5
    )
    arrivals = scenario.workload.arrivals(
        np.random.default_rng(random_streams(seed)[0])
    )  # the simulation's own
    times = np.concatenate(list(arrivals) or [np.empty(0)])
    times = times[times < scenario.duration]
    result = LiveResult([], times.tolist(), [0.0] * len(times), [0] * len(times), [False] * len(times))
    loop = asyncio.get_running_loop()
    start = time.perf_counter()
    # The stack's loops start with the load (at the first await below), so its ticks fall where it starts.
    result.bucket_phase = time.time() % 1.0
    first_report = stack.activator.first_report
    if first_report is not None:
        result.activator_report_phase = (first_report - loop.time()) % 1.0

    async def one(i: int, due: float) -> None:
        reply = await client.request()
        elapsed = time.perf_counter() - due
        ok = 200 <= reply.status < 300
        result.latencies[i] = elapsed if ok else -1.0
        result.statuses[i], result.cold[i] = reply.status, reply.cold
        sent = result.arrivals[i]
        if not ok and sent >= scenario.warmup:
            reason = reply.detail or reply.error or f"HTTP {reply.status} with no body"
            label = phase_label(scenario.workload, sent)
            result.failures.add(FailedRequest(sent, reply.status, label, reason, elapsed))

    async def sample() -> None:
        second = 0
        while second < math.ceil(scenario.duration):
            await asyncio.sleep(max(0.0, start + second + LIVE_ROW_PHASE - time.perf_counter()))
            row = stack.status()["revisions"][0]
            result.rows.append(
                LiveRow(
                    second, row["desired_pods"], row["ready_pods"], row["pods"], row["mode"], row["panicking"]
                )
            )
            if on_second:
                on_second(second)
            second += 1

    sampler = loop.create_task(sample())
    tasks = []
    try:
        for i, offset in enumerate(result.arrivals):
            due = start + offset
            delay = due - time.perf_counter()
            if delay > 0.0005:
                await asyncio.sleep(delay)
            tasks.append(loop.create_task(one(i, due)))
        await sampler
        await asyncio.gather(*tasks)
    finally:
        sampler.cancel()
        client.close()
        await stack.stop()
    return result


def _percentile(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


def live_summary(scenario: Scenario, live: LiveResult) -> dict[str, Any]:
    counted = [i for i, t in enumerate(live.arrivals) if t >= scenario.warmup]
    ok = [live.latencies[i] for i in counted if live.latencies[i] >= 0]
    rows = [r for r in live.rows if r.second >= scenario.warmup]
    return {
        "requests": len(counted),
        "failed": len(counted) - len(ok),
        "latency_p50": _percentile(ok, 50),
        "latency_p95": _percentile(ok, 95),
        "cold_start_requests": sum(live.cold[i] for i in counted),
        "pod_seconds": float(sum(r.pods for r in rows)),  # pods sampled each second ≈ pod-seconds
        "ready_pods_mean": float(np.mean([r.ready_pods for r in rows])) if rows else 0.0,
        "ready_pods_max": max((r.ready_pods for r in rows), default=0),
    }


def sim_summary(report: dict[str, Any]) -> dict[str, Any]:
    return {
        "requests": report["requests"],
        "failed": report["rejected"] + report["timed_out"],
        "latency_p50": report["latency"]["p50"],
        "latency_p95": report["latency"]["p95"],
        "cold_start_requests": report["cold_start_requests"],
        "pod_seconds": report["pod_seconds"],
        "ready_pods_mean": report["ready_pods"]["mean"],
        "ready_pods_max": report["ready_pods"]["max"],
    }


@dataclass(frozen=True)
class ReplayedArrivals(Workload):
    """A workload that replays fixed arrival times whatever the random stream (the live run's own)."""

    times: tuple[float, ...] = ()

    def arrivals(self, rng: np.random.Generator):
        if self.times:
            yield np.asarray(self.times)


def simulate_replicates(
    scenario: Scenario,
    arrivals: list[float],
    seed: int,
    replicates: int,
    *,
    bucket_phase: float = 0.0,
    activator_report_phase: float = ACTIVATOR_REPORT_PHASE,
) -> list[NamingSimulation]:
    """The scenario on the local stack's platform, over the given arrivals, with seeds seed, seed+1, ...

    The local stack drains a pod in half a second and routes round robin once the activator leaves the
    path; this simulates that platform, not Knative's 30 s drain and the scenario's routing. The phases
    are the live run's clocks (:class:`LiveResult`): with them the simulated windows hold the same
    seconds of stats at each decision as the live ones, not up to a second less.
    """
    platform = dataclasses.replace(
        scenario.platform,
        drain_period=LOCAL_DRAIN_SECONDS,
        bucket_phase=bucket_phase,
        activator_report_phase=activator_report_phase,
    )
    matched = dataclasses.replace(
        scenario,
        revision=dataclasses.replace(scenario.revision, routing=LOCAL_ROUTING),
        platform=platform,
        workload=ReplayedArrivals(scenario.workload.phases, tuple(arrivals)),
    )
    sims = [NamingSimulation(matched, seed + k) for k in range(replicates)]
    for sim in sims:
        sim.run()
    return sims


def aggregate(summaries: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, tuple[Any, Any]]]:
    """Per figure: the mean over replicates, and the (lowest, highest) replicate."""
    mean: dict[str, Any] = {}
    spread: dict[str, tuple[Any, Any]] = {}
    for key in summaries[0]:
        values = [s[key] for s in summaries if s[key] is not None]
        if not values:
            mean[key] = None
            continue
        mean[key] = values[0] if len(set(values)) == 1 else float(np.mean(values))
        spread[key] = (min(values), max(values))
    return mean, spread


def ready_band(sims: list[NamingSimulation]) -> tuple[list[float], list[float]]:
    """Lowest and highest ready-pod count per simulated second across replicates."""
    counts = np.array([[row.ready_pods for row in sim.timeline] for sim in sims], dtype=float)
    return counts.min(axis=0).tolist(), counts.max(axis=0).tolist()


def difference(live: float | None, simulated: float | None) -> float | None:
    if live is None or simulated is None:
        return None
    if live == simulated:
        return 0.0
    return abs(simulated - live) / max(abs(live), 1e-9)


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("scenario", type=Path, help="scenario YAML (format: docs/simulation.md)")
    parser.add_argument(
        "--out", type=Path, required=True, help="directory for validate.json and comparison.png"
    )
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: the scenario's)")
    parser.add_argument(
        "--replicates",
        type=positive_int,
        default=DEFAULT_REPLICATES,
        help=f"simulated runs to average, seeds SEED, SEED+1, ... (default {DEFAULT_REPLICATES})",
    )
    parser.add_argument(
        "--failures",
        type=positive_int,
        default=DEFAULT_SHOWN,
        metavar="N",
        help=f"failed requests to list per side, the rest counted (default {DEFAULT_SHOWN}; "
        "validate.json keeps more)",
    )
    add_progress_option(parser)


def run(args: argparse.Namespace) -> int:
    console = Console(stderr=True)
    scenario = load_or_explain(args.scenario, "validate", console)
    if scenario is None:
        return 2
    problems = unsupported(scenario)
    if problems:
        for problem in problems:
            console.print(f"[red]kpa validate: {args.scenario}: {problem}[/red]")
        return 2
    if scenario.revision.routing != LOCAL_ROUTING:
        console.print(
            f"kpa validate: note: revision.routing: {scenario.revision.routing} — the local stack routes "
            f"{LOCAL_ROUTING} when the activator is out of the path, so both sides run {LOCAL_ROUTING}"
        )
    seed = scenario.seed if args.seed is None else args.seed
    args.out.mkdir(parents=True, exist_ok=True)
    columns = (
        TextColumn("[bold]live run"),
        BarColumn(),
        TextColumn("{task.completed:.0f}/{task.total:.0f} s"),
    )
    shown = progress_console(args)
    with Progress(
        *columns, TimeElapsedColumn(), console=shown or console, transient=True, disable=shown is None
    ) as progress:
        task = progress.add_task("live", total=math.ceil(scenario.duration))
        live = asyncio.run(run_live(scenario, seed, lambda s: progress.update(task, completed=s + 1)))
    sims = simulate_replicates(
        scenario,
        live.arrivals,
        seed,
        args.replicates,
        bucket_phase=live.bucket_phase,
        activator_report_phase=live.activator_report_phase,
    )
    simulated, spread = aggregate([sim_summary(summarize(sim)) for sim in sims])
    summaries = {"live": live_summary(scenario, live), "simulated": simulated}
    diffs = {key: difference(summaries["live"][key], simulated[key]) for key in COMPARED}
    simulated_failures = Failures()
    for sim in sims:
        simulated_failures.extend(sim.failures)
    document = {
        **summaries,
        "simulated_range": spread,
        "difference": diffs,
        "goal": GOAL,
        "seed": seed,
        "bucket_phase": round(live.bucket_phase, 3),
        "activator_report_phase": round(live.activator_report_phase, 3),
        "replicates": args.replicates,
        "scenario": str(args.scenario),
        "failed_requests": {"live": live.failures.to_json(), "simulated": simulated_failures.to_json()},
    }
    (args.out / "validate.json").write_text(json.dumps(document, indent=2) + "\n")
    with (args.out / "live_timeline.json").open("w") as handle:
        json.dump([asdict(row) for row in live.rows], handle)
    plot_live_vs_simulated(
        [asdict(r) for r in live.rows],
        [
            {"second": r.second, "ready_pods": r.ready_pods, "desired_pods": r.desired_pods}
            for r in sims[0].timeline
        ],
        args.out / "comparison.png",
        f"{args.scenario.name}: live (kpa up) vs simulated, seed {seed}; band: {args.replicates} replicates",
        band=ready_band(sims),
    )
    table = Table(title=f"{args.scenario.name}: live vs simulated (goal: within {GOAL:.0%})")
    for column in ("", "live", f"simulated (mean of {args.replicates})", "simulated range", "difference"):
        table.add_column(column, justify="right")
    for key in summaries["live"]:
        diff = diffs.get(key)
        mark = "" if diff is None else (f"{diff:.1%}" + (" ✓" if diff <= GOAL else " ✗"))
        low_high = spread.get(key)
        shown_range = "" if low_high is None else f"{figure(low_high[0])} – {figure(low_high[1])}"
        table.add_row(key, figure(summaries["live"][key]), figure(simulated[key]), shown_range, mark)
    Console().print(table)
    listed = failures_table(live.failures, simulated_failures, args.failures)
    if listed is not None:
        Console().print(listed)
    console.print(f"wrote validate.json, live_timeline.json, comparison.png to {args.out}")
    return 0
