"""Queue-proxy benchmark: direct vs `kpa queue-proxy` (cc=0 and cc=100) vs nginx, in one run.

    .venv/bin/python benchmarks/bench_queueproxy.py [--duration 10] [--connections 1,16,64] [--rounds 1]

A trivial upstream (uvicorn with a raw ASGI app answering 25 bytes, as in
reference/measured-here.md) is measured directly, through the queue-proxy with no breaker (cc=0),
through the queue-proxy with a breaker (cc=100), and through nginx as a reverse proxy with
upstream keep-alive (one worker, like our single process). The load generator is ``wrk -t1``; the
targets are interleaved for each connection count so drift hits all of them alike. Prints req/s,
p50, p99, the proxies' CPU time per request, the ratios and the machine.

Goals (issue 3): at 16 connections the queue-proxy keeps >= 65 % of direct req/s and >= 80 % of
nginx's; at 1 connection it adds <= 0.2 ms to p50. Setup installs ``wrk`` and ``nginx`` from Debian
if missing. Everything binds 127.0.0.1; every process started here is stopped here.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.progress import Progress
from rich.table import Table

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
    wait_for_port,
)

console = Console(stderr=True)

UPSTREAM = r"""
import sys
BODY = b"hello from the upstream!\n"  # 25 bytes
HEADERS = [(b"content-type", b"text/plain"), (b"content-length", b"25")]

async def app(scope, receive, send):
    if scope["type"] == "http":
        await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
        await send({"type": "http.response.body", "body": BODY})

import uvicorn
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), loop="uvloop", http="httptools",
            access_log=False, log_level="warning")
"""

NGINX_CONF = """
worker_processes 1;
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    upstream user_container {{ server 127.0.0.1:{upstream}; keepalive 128; }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://user_container;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
}}
"""


@dataclass
class Target:
    name: str
    port: int
    proc: subprocess.Popen
    cpu_pids: list[int] = field(default_factory=list)  # proxy processes whose CPU we account


def children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    if int(stat.read().rsplit(")", 1)[1].split()[1]) == pid:
                        found.append(int(entry))
            except OSError:
                continue
    return found


def start_upstream() -> Target:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-c", UPSTREAM, str(port)])
    wait_for_port(port)
    return Target("direct", port, proc, [])


def start_queue_proxy(
    name: str, user_port: int, cc: int, tree: str | None = None, env: dict[str, str] | None = None
) -> Target:
    proc = subprocess.Popen(
        [sys.executable, "-m", "kpa", "queue-proxy", "--user-port", str(user_port), "--log-level", "warning",
         "--serving-port", "0", "--admin-port", "0", "--stats-port", "0", "--metrics-port", "0"],
        env=tree_env(tree, {"CONTAINER_CONCURRENCY": str(cc), **(env or {})}),
        stdout=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    ports = json.loads(proc.stdout.readline())
    wait_for_port(ports["serving_port"])
    return Target(name, ports["serving_port"], proc, [proc.pid])


# A loopback OTLP/HTTP receiver that accepts every export and drops it (--traced): the cost measured is
# the queue-proxy's spans, batching and export, not a collector's.
OTLP_SINK = r"""
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
class Sink(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length", 0)))
        self.send_response(200); self.send_header("content-length", "0"); self.end_headers()
    def log_message(self, *args): pass
ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Sink).serve_forever()
"""


def start_traced_queue_proxy(user_port: int) -> tuple[Target, subprocess.Popen]:
    """The queue-proxy (cc=0) tracing every request to a loopback OTLP sink; returns it and the sink."""
    sink_port = free_port()
    sink = subprocess.Popen([sys.executable, "-c", OTLP_SINK, str(sink_port)])
    wait_for_port(sink_port)
    tracing = {"TRACING_CONFIG_BACKEND": "otlp", "TRACING_CONFIG_SAMPLE_RATE": "1",
               "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": f"http://127.0.0.1:{sink_port}/v1/traces"}  # fmt: skip
    return start_queue_proxy("queue-proxy cc=0 traced 100%", user_port, 0, env=tracing), sink


def start_nginx(user_port: int, workdir: str) -> Target:
    port = free_port()
    conf = Path(workdir, "nginx.conf")
    conf.write_text(NGINX_CONF.format(dir=workdir, upstream=user_port, port=port))
    proc = subprocess.Popen(["nginx", "-e", f"{workdir}/error.log", "-p", workdir, "-c", str(conf)])
    wait_for_port(port)
    return Target("nginx", port, proc, children(proc.pid))


@dataclass
class Sample:
    wrk: WrkResult
    cpu_us_per_request: float | None


def measure(target: Target, connections: int, duration: float) -> Sample:
    before = [cpu_seconds(pid) for pid in target.cpu_pids]
    result = run_wrk(f"http://127.0.0.1:{target.port}/", connections, duration)
    used = sum(cpu_seconds(pid) for pid in target.cpu_pids) - sum(before)
    per_request = used / result.requests * 1e6 if target.cpu_pids and result.requests else None
    return Sample(result, per_request)


def summarize(samples: list[Sample]) -> dict[str, float | None]:
    cpu = [s.cpu_us_per_request for s in samples if s.cpu_us_per_request is not None]
    return {
        "rps": statistics.mean(s.wrk.rps for s in samples),
        "p50": statistics.median(s.wrk.p50_ms for s in samples),
        "p99": statistics.median(s.wrk.p99_ms for s in samples),
        "errors": sum(s.wrk.errors for s in samples),
        "cpu": statistics.mean(cpu) if cpu else None,
    }


def report(results: dict[int, dict[str, dict]], duration: float, rounds: int) -> str:
    """Print the tables; returns the markdown block recorded in docs/benchmarks.md."""
    md = [
        f"Machine: {machine()}",
        "",
        "| connections | target | req/s | p50 ms | p99 ms | proxy CPU µs/req |",
        "|---|---|---|---|---|---|",
    ]
    for conns, by_target in results.items():
        table = Table(title=f"{conns} connection(s), wrk -t1, {duration:g}s x {rounds}")
        for column in ("target", "req/s", "p50 ms", "p99 ms", "errors", "proxy CPU µs/req"):
            table.add_column(column, justify="left" if column == "target" else "right")
        for name, s in by_target.items():
            cpu = f"{s['cpu']:.0f}" if s["cpu"] is not None else "-"
            table.add_row(
                name, f"{s['rps']:,.0f}", f"{s['p50']:.3f}", f"{s['p99']:.3f}", str(s["errors"]), cpu
            )
            md.append(f"| {conns} | {name} | {s['rps']:,.0f} | {s['p50']:.3f} | {s['p99']:.3f} | {cpu} |")
        console.print(table)
    md += [
        "",
        "| connections | queue-proxy | vs direct (req/s) | vs nginx (req/s) | added p50 ms |",
        "|---|---|---|---|---|",
    ]
    lines = []
    for conns, by_target in results.items():
        direct, nginx = by_target["direct"], by_target["nginx"]
        for name in ("queue-proxy cc=0", "queue-proxy cc=100"):
            qp = by_target[name]
            vs_direct, vs_nginx = qp["rps"] / direct["rps"], qp["rps"] / nginx["rps"]
            added = qp["p50"] - direct["p50"]
            md.append(f"| {conns} | {name} | {vs_direct:.0%} | {vs_nginx:.0%} | {added:+.3f} |")
            ratios = f"{vs_direct:4.0%} of direct {vs_nginx:4.0%} of nginx"
            lines.append(f"c={conns:<3} {name:<19} {ratios}, p50 {added:+.3f} ms")
    console.print("\n".join(lines))
    goals = []
    if 16 in results:
        for name in ("queue-proxy cc=0", "queue-proxy cc=100"):
            r = results[16]
            of_direct = "met" if r[name]["rps"] >= 0.65 * r["direct"]["rps"] else "MISSED"
            of_nginx = "met" if r[name]["rps"] >= 0.80 * r["nginx"]["rps"] else "MISSED"
            goals.append(f"c=16 {name}: >=65% of direct {of_direct}, >=80% of nginx {of_nginx}")
    if 1 in results:
        for name in ("queue-proxy cc=0", "queue-proxy cc=100"):
            added = results[1][name]["p50"] - results[1]["direct"]["p50"]
            goals.append(
                f"c=1 {name}: adds {added:.3f} ms to p50 (goal <= 0.2) {'met' if added <= 0.2 else 'MISSED'}"
            )
    console.print("\n".join(goals))
    baseline = [name for name in next(iter(results.values())) if name.endswith(BASELINE)]
    if baseline:
        md += ["", "| connections | queue-proxy | req/s this / baseline | CPU µs/req this tree | baseline |"]
        md.append("|---|---|---|---|---|")
        for conns, by_target in results.items():
            for name in baseline:
                ours, theirs = by_target[name.removesuffix(BASELINE)], by_target[name]
                row = f"{ours['rps'] / theirs['rps']:.2f} | {ours['cpu']:.1f} | {theirs['cpu']:.1f}"
                md.append(f"| {conns} | {name.removesuffix(BASELINE)} | {row} |")
                console.print(f"c={conns:<3} {name}: this tree / baseline req/s {row}")
    console.print(f"machine: {machine()}")
    return "\n".join(md)


BASELINE = " (baseline)"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per wrk run (default 10)")
    parser.add_argument("--connections", default="1,16,64", help="comma-separated connection counts")
    parser.add_argument("--rounds", type=int, default=1, help="interleaved repetitions of every run")
    parser.add_argument("--markdown", action="store_true", help="also print a markdown block for docs")
    parser.add_argument(
        "--baseline-tree", help="another checkout: its queue-proxy runs too, interleaved, for before/after"
    )
    parser.add_argument(
        "--traced", action="store_true", help="also a queue-proxy tracing 100%% to a loopback OTLP sink"
    )
    args = parser.parse_args()
    connection_counts = [int(c) for c in args.connections.split(",")]
    ensure_debian_packages({"wrk": "wrk", "nginx": "nginx"})

    started: list[Target] = []
    with tempfile.TemporaryDirectory(prefix="bench-qp-") as workdir:
        os.chmod(workdir, 0o755)  # nginx workers drop root and must read their temp paths
        try:
            upstream = start_upstream()
            started.append(upstream)
            targets = [
                upstream,
                start_queue_proxy("queue-proxy cc=0", upstream.port, 0),
                start_queue_proxy("queue-proxy cc=100", upstream.port, 100),
                start_nginx(upstream.port, workdir),
            ]
            if args.baseline_tree:
                targets += [
                    start_queue_proxy(f"queue-proxy cc={cc}{BASELINE}", upstream.port, cc, args.baseline_tree)
                    for cc in (0, 100)
                ]
            if args.traced:
                traced, sink = start_traced_queue_proxy(upstream.port)
                targets.append(traced)
                started.append(Target("otlp sink", 0, sink, []))
            started += targets[1:]
            samples: dict[int, dict[str, list[Sample]]] = {
                c: {t.name: [] for t in targets} for c in connection_counts
            }
            with Progress(console=console, transient=True) as progress:
                for target in targets:  # warm-up: connections, pools, caches
                    run_wrk(f"http://127.0.0.1:{target.port}/", 16, 1)
                task = progress.add_task(
                    "wrk runs", total=args.rounds * len(connection_counts) * len(targets)
                )
                for _ in range(args.rounds):
                    for conns in connection_counts:
                        for target in targets:
                            progress.update(task, description=f"{target.name}, {conns} connection(s)")
                            samples[conns][target.name].append(measure(target, conns, args.duration))
                            progress.advance(task)
        finally:
            for target in reversed(started):
                stop(target.proc)
    results = {c: {name: summarize(s) for name, s in by_target.items()} for c, by_target in samples.items()}
    markdown = report(results, args.duration, args.rounds)
    if args.markdown:
        print(markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
