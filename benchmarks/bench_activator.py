"""Activator benchmark: serve-path overhead and cold-start overhead, in one run.

    .venv/bin/python benchmarks/bench_activator.py [--duration 5] [--rounds 2] [--cold-starts 24]

(1) **Serve path**: ``wrk -t1 -c16`` against the sample app directly, through ``kpa queue-proxy``, and
    through ``kpa activator`` + ``kpa queue-proxy`` (each a child process, as deployed), the three
    targets interleaved over ``--rounds`` rounds. Prints req/s, p50 and p99 and the ratios.
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
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass

from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from autoscaler.stat import Stat
from queueproxy.http11 import HttpServer, Request, Response
from queueproxy.upstream import UpstreamError, UpstreamPool

PY = sys.executable
console = Console()


def machine() -> str:
    model = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), model)
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} cores, Python {platform.python_version()}"


# -- child processes ---------------------------------------------------------------------------------


def spawn(*args: str) -> tuple[subprocess.Popen[str], dict]:
    """Start a `kpa`/python child that prints a JSON ports line first; return it and that line."""
    proc = subprocess.Popen([PY, *args], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    line = proc.stdout.readline()
    if not line:
        raise SystemExit(f"child {' '.join(args)} exited before printing its ports")
    return proc, json.loads(line)


def stop(proc: subprocess.Popen[str], sig: int = signal.SIGINT) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_app(port: int) -> subprocess.Popen[str]:
    return subprocess.Popen([PY, "-m", "kpa.sample_app", "--port", str(port)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


def queue_proxy_args(serving_port: int, user_port: int) -> list[str]:
    return ["-m", "kpa", "queue-proxy", "--serving-port", str(serving_port), "--admin-port", "0",
            "--stats-port", "0", "--metrics-port", "0", "--user-port", str(user_port), "--drain-timeout", "0",
            "--log-level", "warning"]


# -- (1) serve path ------------------------------------------------------------------------------------


@dataclass
class WrkResult:
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int


def _ms(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text).groups()
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def wrk(url: str, duration: float, host: str | None = None) -> WrkResult:
    cmd = ["wrk", "-t1", "-c16", f"-d{duration:g}s", "--latency", url]
    if host:
        cmd += ["-H", f"Host: {host}"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 30, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p50 = _ms(re.search(r"50%\s+(\S+)", out).group(1))
    p99 = _ms(re.search(r"99%\s+(\S+)", out).group(1))
    errors = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return WrkResult(rps, p50, p99, errors + (int(non2xx.group(1)) if non2xx else 0))


def serve_path(duration: float, rounds: int) -> dict[str, list[WrkResult]]:
    app_port = free_port()
    app = start_app(app_port)
    qp, qp_ports = spawn(*queue_proxy_args(0, app_port))
    act, act_ports = spawn("-m", "kpa", "activator", "--port", "0", "--admin-port", "0", "--log-level", "warning",
                           "--revision", f"hello:endpoints=127.0.0.1:{qp_ports['serving_port']}")
    targets = {
        "direct": (f"http://127.0.0.1:{app_port}/", None),
        "queue-proxy": (f"http://127.0.0.1:{qp_ports['serving_port']}/", None),
        "activator + queue-proxy": (f"http://127.0.0.1:{act_ports['serving_port']}/", "hello"),
    }
    results: dict[str, list[WrkResult]] = {name: [] for name in targets}
    try:
        time.sleep(0.5)  # the activator's first probe of the queue-proxy
        for url, host in targets.values():
            wrk(url, 1.0, host)  # warm-up: connections, pools, branch caches
        with Progress(console=console, transient=True) as progress:
            task = progress.add_task("serve path (wrk -t1 -c16)", total=rounds * len(targets))
            for _ in range(rounds):
                for name, (url, host) in targets.items():
                    results[name].append(wrk(url, duration, host))
                    progress.advance(task)
    finally:
        stop(act)
        stop(qp)
        stop(app, signal.SIGTERM)
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


async def one_cold_start(name: str, catcher: StatCatcher, admin: UpstreamPool, serving: UpstreamPool) -> ColdStart:
    path = f"/revisions/default/{name}".encode()
    status, _, body = await admin.request(b"PUT", path, body=b'{"container_concurrency": 1}')
    assert status == 200, body
    catcher.waiters[name] = asyncio.get_running_loop().create_future()
    sent = time.monotonic()
    reply = asyncio.ensure_future(serving.request(b"GET", b"/", ((b"knative-serving-revision", name.encode()),)))
    await catcher.waiters[name]  # the scale-from-zero signal: "start a pod"
    user_port, qp_port = free_port(), free_port()
    spawned = time.monotonic()
    app = await asyncio.create_subprocess_exec(PY, "-m", "kpa.sample_app", "--port", str(user_port),
                                               stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
    qp = await asyncio.create_subprocess_exec(PY, *queue_proxy_args(qp_port, user_port),
                                              stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
    endpoints = json.dumps({"addresses": [f"127.0.0.1:{qp_port}"]}).encode()
    status, _, body = await admin.request(b"PUT", path + b"/endpoints", body=endpoints)
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
        await admin.request(b"DELETE", path)
    return ColdStart(total=done - sent, pod_own=ready - spawned, wake=spawned - sent, detect_forward=done - ready)


# -- report --------------------------------------------------------------------------------------------


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))]


def report(serve: dict[str, list[WrkResult]], colds: dict[str, list[ColdStart]]) -> None:
    console.print(f"[bold]machine[/bold]: {machine()}")
    table = Table(title="(1) serve path, wrk -t1 -c16, trivial upstream (mean over rounds)")
    for col in ("target", "req/s", "p50 ms", "p99 ms", "errors", "req/s vs queue-proxy", "req/s vs direct"):
        table.add_column(col, justify="right")
    mean = {name: statistics.fmean(r.rps for r in rs) for name, rs in serve.items()}
    for name, rs in serve.items():
        table.add_row(
            name, f"{mean[name]:,.0f}", f"{statistics.fmean(r.p50_ms for r in rs):.2f}",
            f"{statistics.fmean(r.p99_ms for r in rs):.2f}", str(sum(r.errors for r in rs)),
            f"{mean[name] / mean['queue-proxy']:.2f}", f"{mean[name] / mean['direct']:.2f}",
        )
    console.print(table)
    ratio = mean["activator + queue-proxy"] / mean["queue-proxy"]
    console.print(f"activator path / queue-proxy alone = {ratio:.2f} (goal >= 0.50: "
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
        console.print(f"cold-start overhead p50 {1000 * pct(over, 50):.1f} ms, p95 {1000 * pct(over, 95):.1f} ms "
                      f"(goal <= 50 / <= 200 ms: {'met' if met else 'NOT met'})")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per wrk run")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds of the three targets")
    parser.add_argument("--cold-starts", type=int, default=24)
    parser.add_argument("--probe-frequency", action="append", default=None,
                        help="activator probe period(s) for the cold starts (default: 200ms, Knative's)")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        print("wrk is not installed: apt-get install -y wrk", file=sys.stderr)
        return 2
    import uvloop

    serve = serve_path(args.duration, args.rounds)
    colds = {f: uvloop.run(cold_starts(args.cold_starts, f)) for f in (args.probe_frequency or ["200ms"])}
    report(serve, colds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
