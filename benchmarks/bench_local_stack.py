"""Local stack benchmark: cold start end to end, and lost requests across scale cycles, in one run.

    .venv/bin/python benchmarks/bench_local_stack.py [--cold-starts 6] [--cycles 20]

(1) **Cold start** of a trivial user container (the sample app): the revision is left to scale to
    zero, then one request is sent to the `kpa up` entry and timed to its response. The time is split
    at the events the stack reports: *decide* (request → the autoscaler asks for a pod: activator stat
    push, poke, decision), *process start* (→ both pod processes running and the queue-proxy's ports
    known), *readiness* (→ the queue-proxy's readiness probe passes: user container listening), and
    *activator* (→ response: the activator's own probe of the new pod and the proxying).
    Baseline, same run: the same two processes started by hand and polled every 2 ms until the first
    request through them succeeds (the floor any orchestration sits on). For reference, Ray Serve
    needs 2.7 s here for a trivial `min_replicas=0` deployment (docs/reference, measured-here.md;
    Ray is not run on these machines).
(2) **Lost requests across scale cycles**: open-loop traffic alternates between 80 req/s and
    5 req/s of 50 ms requests, so the revision scales up (activator in the path, then serve mode)
    and down (pods drained while traffic continues) once per cycle. Every request must get a 2xx.

The stack runs in this process (autoscaler, activator and entry, as `kpa up` runs them); pods are
real child processes. Everything binds 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import uvloop
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import free_port, machine

from autoscaler.actuator import PodInfo
from autoscaler.stat import RevisionKey
from kpa.load import Client, Target, parse_phases, percentile, run_load
from localbackend.stack import LocalStack
from localbackend.stack_file import parse_stack

REVISION = RevisionKey("default", "bench")
COLD_STACK = """
config: {stable-window: 6s, scale-to-zero-grace-period: 1s}
revisions:
  - name: bench
    command: [python, -m, kpa.sample_app]
    containerConcurrency: 1
"""
CYCLE_STACK = """
config: {stable-window: 6s, scale-to-zero-grace-period: 1s, panic-window-percentage: '50'}
revisions:
  - name: bench
    command: [python, -m, kpa.sample_app, --delay, '0.05']
    containerConcurrency: 4
    annotations:
      autoscaling.knative.dev/target: '1'
      autoscaling.knative.dev/target-burst-capacity: '5'
      autoscaling.knative.dev/max-scale: '6'
"""


@dataclass
class Events:
    """When the stack did what, for the current cold start (loop time)."""

    desired: float | None = None
    launched: float | None = None
    ready: float | None = None


@dataclass
class ColdStart:
    total: float
    decide: float
    process: float
    readiness: float
    activator: float


@dataclass
class CycleStats:
    requests: int = 0
    ok: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)
    ups: int = 0
    downs: int = 0
    max_pods: int = 0
    serve_seconds: float = 0.0


async def _wait(predicate, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout}s")
        await asyncio.sleep(0.05)


def _row(stack: LocalStack):
    return stack.service.status()[0]


async def cold_starts(count: int, log_dir: Path) -> list[ColdStart]:
    stack = LocalStack(parse_stack(COLD_STACK, "bench.yaml"), port=0, admin_port=0, log_dir=log_dir)
    loop = asyncio.get_running_loop()
    events = Events()
    set_scale = stack.actuator.set_desired_scale

    def recording_set_scale(revision: RevisionKey, desired: int) -> None:
        if desired > 0 and events.desired is None:
            events.desired = loop.time()
        set_scale(revision, desired)

    def pods_changed(revision: RevisionKey, pods: list[PodInfo]) -> None:
        if pods and events.launched is None:
            events.launched = loop.time()
        if any(p.ready for p in pods) and events.ready is None:
            events.ready = loop.time()

    stack.actuator.set_desired_scale = recording_set_scale  # type: ignore[method-assign]
    stack.actuator.subscribe(pods_changed)
    results = []
    await stack.start()
    client = Client(Target.from_url(stack.entry_url + "/", host_header="bench"), timeout=30)
    try:
        for _ in range(count):
            await _wait(lambda: _row(stack).pods == 0 and _row(stack).requested_pods == 0, 40)
            await asyncio.sleep(0.3)
            events.desired = events.launched = events.ready = None
            start = loop.time()
            reply = await client.request()
            end = loop.time()
            if reply.status != 200 or None in (events.desired, events.launched, events.ready):
                raise RuntimeError(f"cold start failed: {reply} {events}")
            results.append(
                ColdStart(
                    total=end - start,
                    decide=events.desired - start,
                    process=events.launched - events.desired,
                    readiness=events.ready - events.launched,
                    activator=end - events.ready,
                )
            )
            client.close()  # the next cold start opens a fresh connection, as a new client would
    finally:
        client.close()
        await stack.stop()
    return results


async def bare_start() -> float:
    """The same pod started by hand: sample app + queue-proxy, polled until a request succeeds."""
    user_port = free_port()
    env = {**os.environ, "PORT": str(user_port)}
    serving = free_port()
    start = time.monotonic()
    user = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "kpa.sample_app",
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        start_new_session=True,
    )
    qp = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "kpa",
        "queue-proxy",
        "--serving-port",
        str(serving),
        "--user-port",
        str(user_port),
        "--admin-port",
        "0",
        "--stats-port",
        "0",
        "--metrics-port",
        "0",
        "--log-level",
        "warning",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
        start_new_session=True,
    )
    client = Client(Target("127.0.0.1", serving, host_header="bench"), timeout=1.0)
    try:
        while True:
            reply = await client.request()
            if reply.status == 200:
                return time.monotonic() - start
            await asyncio.sleep(0.002)
    finally:
        client.close()
        for proc in (qp, user):
            os.killpg(proc.pid, signal.SIGTERM)
            await proc.wait()


async def scale_cycles(cycles: int, log_dir: Path, console: Console) -> CycleStats:
    stack = LocalStack(parse_stack(CYCLE_STACK, "bench.yaml"), port=0, admin_port=0, log_dir=log_dir)
    stats = CycleStats()
    await stack.start()
    try:
        await _wait(lambda: _row(stack).ready_pods >= 1, 20)

        async def watch() -> None:
            last_desired = _row(stack).requested_pods
            rising = False
            while True:
                row = _row(stack)
                stats.max_pods = max(stats.max_pods, row.pods)
                if row.mode == "serve":
                    stats.serve_seconds += 0.1
                if row.requested_pods > last_desired and not rising:
                    stats.ups, rising = stats.ups + 1, True
                elif row.requested_pods < last_desired and rising:
                    stats.downs, rising = stats.downs + 1, False
                last_desired = row.requested_pods
                await asyncio.sleep(0.1)

        watcher = asyncio.create_task(watch())
        client = Client(Target.from_url(stack.entry_url + "/", host_header="bench"), timeout=30)
        phases = parse_phases(["rate:80:4", "rate:5:7"] * cycles)
        started = time.monotonic()
        try:
            result = await run_load(client, phases)
        finally:
            watcher.cancel()
            client.close()
        summary = result.summary()
        stats.requests, stats.ok, stats.outcomes = summary["requests"], summary["ok"], summary["outcomes"]
        console.print(f"  {cycles} cycles in {time.monotonic() - started:.0f} s")
    finally:
        await stack.stop()
    return stats


def _ms(values: list[float], q: float) -> str:
    return f"{percentile(sorted(values), q) * 1000:.0f}"


async def main(args: argparse.Namespace) -> None:
    console = Console()
    console.print(f"machine: {machine()}")
    with tempfile.TemporaryDirectory(prefix="bench-local-stack-") as tmp:
        console.print(f"cold starts ({args.cold_starts}, each after the revision scaled to zero) ...")
        cold = await cold_starts(args.cold_starts, Path(tmp) / "cold")
        bare = [await bare_start() for _ in range(args.cold_starts)]
        console.print(f"scale cycles ({args.cycles} x [80 req/s for 4 s, 5 req/s for 7 s]) ...")
        cycles = await scale_cycles(args.cycles, Path(tmp) / "cycles", console)

    table = Table(title="cold start, request at zero → response (ms)")
    for column in ("part", "p50", "max"):
        table.add_column(column, justify="right" if column != "part" else "left")
    parts = {
        "decide (stat push → poke → decision)": [c.decide for c in cold],
        "process start (spawn → both processes up)": [c.process for c in cold],
        "readiness (→ queue-proxy probe passes)": [c.readiness for c in cold],
        "activator (→ its probe + forward → response)": [c.activator for c in cold],
        "total, through kpa up": [c.total for c in cold],
        "baseline: same pod started by hand, first 200": bare,
    }
    for name, values in parts.items():
        table.add_row(name, _ms(values, 50), _ms(values, 100))
    console.print(table)
    total = percentile(sorted(c.total for c in cold), 50)
    floor = percentile(sorted(bare), 50)
    console.print(
        f"cold start p50 {total * 1000:.0f} ms (goal ≤ 500 ms; Ray Serve 2.7 s here) "
        f"= {total / floor:.2f}x the "
        f"bare pod start ({floor * 1000:.0f} ms): orchestration adds {(total - floor) * 1000:.0f} ms"
    )
    lost = cycles.requests - cycles.ok
    console.print(
        f"scale cycles: {cycles.ups} up / {cycles.downs} down, max {cycles.max_pods} pods, serve mode "
        f"{cycles.serve_seconds:.0f} s; {cycles.requests} requests, lost {lost} (goal 0) {cycles.outcomes}"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cold-starts", type=int, default=6)
    parser.add_argument("--cycles", type=int, default=20)
    uvloop.run(main(parser.parse_args()))
