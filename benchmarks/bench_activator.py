"""Activator benchmark: serve-path overhead and cold-start overhead, in one run.

    .venv/bin/python benchmarks/bench_activator.py [--duration 5] [--rounds 2] [--cold-starts 24]

(1) **Serve path**: ``wrk -t1 -c16`` against the sample app directly, through ``kpa queue-proxy``, and
    through ``kpa activator`` + ``kpa queue-proxy`` (each a child process, as deployed), the three
    targets interleaved over ``--rounds`` rounds. Prints req/s, p50, p99, CPU µs per request of each
    process, and the ratios.
(2) **Cold start**: a request for a revision at zero is sent to a ``kpa activator`` child; this script
    plays the autoscaler: when the activator's immediate stat arrives it starts the pod (sample app +
    ``kpa queue-proxy``, two child processes) and hands the activator the pod's address. Separately it
    probes the pod every 2 ms to learn the pod's own time from process start to its first successful
    probe. Cold-start overhead = time to first response − that pod time; it is split into *wake*
    (request → pod spawned: the stat push and this autoscaler's reaction) and *detect + forward* (pod
    ready → response: the activator's probe period and the proxying).

Goals (issue 4): overhead ≤ 50 ms p50 and ≤ 200 ms p95; activator path ≥ 50 % of queue-proxy-alone req/s.
Needs ``wrk`` (``apt-get install -y wrk``). Everything binds 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from autoscaler.stat import Stat
from httpengine.errors import UpstreamError
from httpengine.request import Request
from httpengine.response import Response
from httpengine.server import HttpServer
from httpengine.upstream import UpstreamPool

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (
    WrkResult,
    cpu_seconds,
    ensure_debian_packages,
    free_port,
    machine,
    run_wrk,
    stop,
    tree_env,
)

PY = sys.executable
# The cold-start rounds drive the activator's admin API, whose state changes need a token.
ADMIN_TOKEN = secrets.token_urlsafe(32)
ADMIN_AUTH = ((b"authorization", f"Bearer {ADMIN_TOKEN}".encode()),)
PROCESSES = ("activator", "queue-proxy", "app")
console = Console(width=150)


def spawn(*args: str, tree: str | None = None) -> tuple[subprocess.Popen[str], dict]:
    """Start a `kpa` child that prints its bound ports as a JSON line first; return it and that line.

    ``tree``: run another checkout's code (``--baseline-tree``)."""
    proc = subprocess.Popen(
        [PY, *args], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=tree_env(tree)
    )
    line = proc.stdout.readline()
    if not line:
        raise SystemExit(f"child {' '.join(args)} exited before printing its ports")
    return proc, json.loads(line)


def queue_proxy_args(serving_port: int, user_port: int) -> list[str]:
    return ["-m", "kpa", "queue-proxy", "--serving-port", str(serving_port), "--admin-port", "0",
            "--stats-port", "0", "--metrics-port", "0", "--user-port", str(user_port), "--drain-timeout", "0",
            "--log-level", "warning"]


# -- (1) serve path ------------------------------------------------------------------------------------


@dataclass
class ServeRun:
    wrk: WrkResult
    cpu_us: dict[str, float]  # CPU microseconds per request, by process


BASELINE = "activator + queue-proxy (baseline)"


def serve_path(duration: float, rounds: int, baseline_tree: str | None = None) -> dict[str, list[ServeRun]]:
    app_port = free_port()
    app = subprocess.Popen([PY, "-m", "kpa.sample_app", "--port", str(app_port)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    qp, qp_ports = spawn(*queue_proxy_args(0, app_port))
    act, act_ports = spawn(
        "-m", "kpa", "activator", "--port", "0", "--admin-port", "0", "--log-level", "warning",
        "--revision", f"hello:endpoints=127.0.0.1:{qp_ports['serving_port']}",
    )
    processes = {"app": app, "queue-proxy": qp, "activator": act}
    targets = {
        "direct": (f"http://127.0.0.1:{app_port}/", ()),
        "queue-proxy": (f"http://127.0.0.1:{qp_ports['serving_port']}/", ()),
        "activator + queue-proxy": (f"http://127.0.0.1:{act_ports['serving_port']}/", ("Host: hello",)),
    }
    if baseline_tree:  # the same activator from another checkout, in front of the same queue-proxy
        base, base_ports = spawn(
            "-m", "kpa", "activator", "--port", "0", "--admin-port", "0", "--log-level", "warning",
            "--revision", f"hello:endpoints=127.0.0.1:{qp_ports['serving_port']}", tree=baseline_tree,
        )  # fmt: skip
        processes["activator (baseline)"] = base
        targets[BASELINE] = (f"http://127.0.0.1:{base_ports['serving_port']}/", ("Host: hello",))
    results: dict[str, list[ServeRun]] = {name: [] for name in targets}
    try:
        time.sleep(0.5)  # the activator's first probe of the queue-proxy
        for url, headers in targets.values():
            run_wrk(url, 16, 1.0, headers=headers)  # warm-up: connections, pools
        with Progress(console=console, transient=True) as progress:
            task = progress.add_task("serve path (wrk -t1 -c16)", total=rounds * len(targets))
            for _ in range(rounds):
                for name, (url, headers) in targets.items():
                    before = {p: cpu_seconds(proc.pid) for p, proc in processes.items()}
                    result = run_wrk(url, 16, duration, headers=headers)
                    spent = {p: cpu_seconds(proc.pid) - before[p] for p, proc in processes.items()}
                    cpu = {p: 1e6 * seconds / max(1, result.requests) for p, seconds in spent.items()}
                    results[name].append(ServeRun(result, cpu))
                    progress.advance(task)
    finally:
        for name in ("activator", "activator (baseline)", "queue-proxy"):
            if name in processes:
                processes[name].send_signal(signal.SIGINT)
                processes[name].wait(10)
        stop(app)
    return results


# -- (2) cold start ------------------------------------------------------------------------------------


@dataclass
class ColdStart:
    total: float  # request sent -> response complete
    pod_own: float  # pod spawned -> its first successful probe (2 ms resolution)
    wake: float  # request sent -> pod spawned
    detect_forward: float  # pod ready -> response complete

    @property
    def overhead(self) -> float:
        return self.total - self.pod_own


class StatCatcher:
    """The autoscaler's stat endpoint: wakes whoever waits for a revision's first stat."""

    def __init__(self) -> None:
        self.waiters: dict[str, asyncio.Future[float]] = {}
        self.server = HttpServer(self.handle, name="bench-autoscaler")
        self.url = ""

    async def start(self) -> None:
        _, port = await self.server.start("127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{port}/stats"

    async def handle(self, request: Request, response: Response) -> None:
        arrived = time.monotonic()
        for item in json.loads(await request.body.read_all(1 << 20)):
            stat = Stat.from_json(item["stat"])
            waiter = self.waiters.get(item["revision"])
            if waiter is not None and not waiter.done() and stat.average_concurrent_requests > 0:
                waiter.set_result(arrived)
        response.send(202, b"")


async def first_successful_probe(port: int, period: float = 0.002) -> float:
    pool = UpstreamPool("127.0.0.1", port, connect_timeout=0.5)
    try:
        while True:
            try:
                status, _, body = await pool.request(b"GET", b"/healthz", ((b"k-network-probe", b"queue"),))
                if status == 200 and body == b"queue":
                    return time.monotonic()
            except UpstreamError:
                pass
            await asyncio.sleep(period)
    finally:
        pool.close()


async def cold_starts(count: int, probe_frequency: str) -> list[ColdStart]:
    catcher = StatCatcher()
    await catcher.start()
    act = await asyncio.create_subprocess_exec(
        PY, "-m", "kpa", "activator", "--port", "0", "--admin-port", "0", "--log-level", "warning",
        "--autoscaler-url", catcher.url, "--probe-frequency", probe_frequency,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
        env={**os.environ, "KPA_ADMIN_TOKEN": ADMIN_TOKEN},
    )
    ports = json.loads(await act.stdout.readline())
    admin = UpstreamPool("127.0.0.1", ports["admin_port"])
    serving = UpstreamPool("127.0.0.1", ports["serving_port"])
    samples: list[ColdStart] = []
    try:
        with Progress(console=console, transient=True) as progress:
            task = progress.add_task(f"cold starts (probe every {probe_frequency})", total=count)
            for trial in range(count):
                samples.append(await one_cold_start(f"cold-{trial}", catcher, admin, serving))
                progress.advance(task)
    finally:
        act.send_signal(signal.SIGINT)
        await act.wait()
        await catcher.server.shutdown(0.0)
    return samples


async def one_cold_start(
    name: str, catcher: StatCatcher, admin: UpstreamPool, serving: UpstreamPool
) -> ColdStart:
    path = f"/revisions/default/{name}".encode()
    status, _, body = await admin.request(b"PUT", path, ADMIN_AUTH, body=b'{"container_concurrency": 1}')
    assert status == 200, body
    catcher.waiters[name] = asyncio.get_running_loop().create_future()
    sent = time.monotonic()
    routed = ((b"knative-serving-revision", name.encode()),)
    reply = asyncio.ensure_future(serving.request(b"GET", b"/", routed))
    await catcher.waiters[name]  # the scale-from-zero signal: "start a pod"
    user_port, qp_port = free_port(), free_port()
    spawned = time.monotonic()
    quiet = {"stdout": asyncio.subprocess.DEVNULL, "stderr": asyncio.subprocess.DEVNULL}
    app = await asyncio.create_subprocess_exec(PY, "-m", "kpa.sample_app", "--port", str(user_port), **quiet)
    qp = await asyncio.create_subprocess_exec(PY, *queue_proxy_args(qp_port, user_port), **quiet)
    endpoints = json.dumps({"addresses": [f"127.0.0.1:{qp_port}"]}).encode()
    status, _, body = await admin.request(b"PUT", path + b"/endpoints", ADMIN_AUTH, body=endpoints)
    assert status == 200, body
    try:
        ready = await first_successful_probe(qp_port)
        code, headers, answer = await reply
        done = time.monotonic()
        assert code == 200 and (b"x-kpa-cold-start", b"true") in headers, (code, headers, answer)
    finally:
        qp.send_signal(signal.SIGINT)
        app.send_signal(signal.SIGTERM)
        await asyncio.gather(qp.wait(), app.wait())
        await admin.request(b"DELETE", path, ADMIN_AUTH)
    return ColdStart(
        total=done - sent, pod_own=ready - spawned, wake=spawned - sent, detect_forward=done - ready
    )


# -- report --------------------------------------------------------------------------------------------


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))]


def own(target: str, process: str) -> str:
    """The process whose CPU a column shows for ``target``: the baseline's own activator on its row."""
    return "activator (baseline)" if target == BASELINE and process == "activator" else process


def report(serve: dict[str, list[ServeRun]], colds: dict[str, list[ColdStart]]) -> None:
    console.print(f"[bold]machine[/bold]: {machine()}")
    table = Table(title="(1) serve path, wrk -t1 -c16, trivial upstream (mean over rounds)")
    for col in ("target", "req/s", "p50 ms", "p99 ms", "errors", "vs queue-proxy", "vs direct",
                "CPU µs/req: activator", "queue-proxy", "app"):
        table.add_column(col, justify="right")
    mean = {name: statistics.fmean(r.wrk.rps for r in runs) for name, runs in serve.items()}
    for name, runs in serve.items():
        table.add_row(
            name, f"{mean[name]:,.0f}", f"{statistics.fmean(r.wrk.p50_ms for r in runs):.2f}",
            f"{statistics.fmean(r.wrk.p99_ms for r in runs):.2f}", str(sum(r.wrk.errors for r in runs)),
            f"{mean[name] / mean['queue-proxy']:.2f}", f"{mean[name] / mean['direct']:.2f}",
            *(f"{statistics.fmean(r.cpu_us[own(name, p)] for r in runs):.0f}" for p in PROCESSES),
        )
    console.print(table)
    if BASELINE in serve:
        ours, theirs = mean["activator + queue-proxy"], mean[BASELINE]
        cpu_ours = statistics.fmean(r.cpu_us["activator"] for r in serve["activator + queue-proxy"])
        cpu_theirs = statistics.fmean(r.cpu_us["activator (baseline)"] for r in serve[BASELINE])
        console.print(
            f"activator, this tree / baseline: req/s {ours / theirs:.2f} ({ours:,.0f} vs {theirs:,.0f}), "
            f"CPU µs/req {cpu_ours:.0f} vs {cpu_theirs:.0f}"
        )
    ratio = mean["activator + queue-proxy"] / mean["queue-proxy"]
    console.print(f"activator path / queue-proxy alone = {ratio:.2f} req/s (goal >= 0.50: "
                  f"{'met' if ratio >= 0.5 else 'NOT met'})")
    for label, samples in colds.items():
        table = Table(title=f"(2) cold starts, {len(samples)} runs, activator probe every {label} (ms)")
        for col in ("", "p50", "p95", "max"):
            table.add_column(col, justify="right")
        for name, values in (
            ("time to first response", [s.total for s in samples]),
            ("pod's own start -> first successful probe", [s.pod_own for s in samples]),
            ("overhead = first response - pod's own", [s.overhead for s in samples]),
            ("  wake: request -> pod spawned", [s.wake for s in samples]),
            ("  detect + forward: pod ready -> response", [s.detect_forward for s in samples]),
        ):
            table.add_row(name, *(f"{1000 * v:.1f}" for v in (pct(values, 50), pct(values, 95), max(values))))
        console.print(table)
        over = [s.overhead for s in samples]
        met = pct(over, 50) <= 0.050 and pct(over, 95) <= 0.200
        p50, p95 = 1000 * pct(over, 50), 1000 * pct(over, 95)
        verdict = "met" if met else "NOT met"
        console.print(f"cold-start overhead p50 {p50:.1f} ms, p95 {p95:.1f} ms "
                      f"(goal <= 50 / <= 200 ms: {verdict})")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per wrk run")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds of the three targets")
    parser.add_argument("--cold-starts", type=int, default=24, help="cold starts per probe period (0: skip)")
    parser.add_argument("--probe-frequency", action="append", default=None,
                        help="activator probe period(s) for the cold starts (default: 200ms, Knative's)")
    parser.add_argument("--baseline-tree", help="another checkout: its activator runs too, for before/after")
    args = parser.parse_args()
    ensure_debian_packages({"wrk": "wrk"})
    import uvloop

    serve = serve_path(args.duration, args.rounds, args.baseline_tree)
    frequencies = (args.probe_frequency or ["200ms"]) if args.cold_starts > 0 else []
    colds = {f: uvloop.run(cold_starts(args.cold_starts, f)) for f in frequencies}
    report(serve, colds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
