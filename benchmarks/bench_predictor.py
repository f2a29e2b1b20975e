"""Predictor benchmark: backends, protocol encodings, our server vs KServe's, cold starts — in one run.

    .venv/bin/python benchmarks/bench_predictor.py [--duration 8] [--connections 1,8] [--cache-dir DIR]

1. Backends, in process: eager (TorchScript) vs inductor vs zentorch AOTInductor packages for the demo
   CNN and TransformerEncoder at batch 1 and 32, median latency, 1 intra-op thread, interleaved.
2. Protocol: a 1 MB FP32 tensor through an identity model, tritonclient JSON vs binary tensor extension
   (client p50), and the codec alone in process.
3. Servers: `kpa predictor` vs `kserve.ModelServer` (0.21, child process bound to 127.0.0.1, latency
   logging off, 1 torch thread) serving the same TorchScript CNN; the same wrk client (-t1, Lua POST)
   sends identical V2 bodies, JSON and binary, at each connection count. Ours runs eager without and
   with dynamic batching (delay 0); both servers also run pinned to one CPU (`taskset -c 1` for
   KServe, `--cpu-affinity 1` for ours). Protocol overhead = our binary p50 at 1 connection minus the
   model's own median time per call in the same server over the same run (``recent_compute_ms`` of its
   /stats), as a share of the model time; repeated ``--overhead-rounds`` times, median reported.
4. Cold start to ready (launch until GET /v2/health/ready answers 200) of the CNN: KServe, ours eager,
   ours zentorch with an empty compile cache, ours zentorch with the warm cache.

Goals (issue 6): >= 1.5x KServe's req/s; protocol overhead <= 10 % of model time at batch 1 for the
CNN; cached start of the demo model <= 2 s to ready. The compile cache of sections 1 and 3 defaults to a
fresh temporary directory (4 compiles, minutes); pass --cache-dir to reuse one between runs.

Sections 1-3 live in bench_predictor_backends.py, bench_predictor_protocol.py and bench_predictor_wrk.py,
the servers under test in bench_predictor_servers.py; this script runs them, times cold starts (4) and
prints the report.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine
from bench_predictor_backends import bench_backends
from bench_predictor_protocol import bench_protocol
from bench_predictor_servers import cnn_repository, console, start_kserve, start_ours
from bench_predictor_wrk import LABELS, bench_overhead, bench_servers, report_overhead

# --- 4. cold start -------------------------------------------------------------------------------


def bench_cold_start(demo: Path, work: Path) -> dict:
    results = {}
    kserve = start_kserve(demo / "cnn" / "1" / "model.pt", work, wait=False)
    results["kserve"] = kserve.wait_ready()
    kserve.stop()
    eager = start_ours(
        cnn_repository(demo, work / "cold-eager", "eager", batching=True),
        work / "cold-cache-eager",
        wait=False,
    )
    results["ours eager"] = eager.wait_ready()
    eager.stop()
    repository = cnn_repository(demo, work / "cold-zentorch", "zentorch", batching=True)
    cache = work / "cold-cache"
    console.print("[dim]cold start with an empty compile cache (compiles the CNN) ...[/dim]")
    for label in ("ours zentorch, empty cache", "ours zentorch, warm cache"):
        server = start_ours(repository, cache, wait=False)
        results[label] = server.wait_ready()
        server.stop()
    return {k: round(v, 2) for k, v in results.items()}


# --- report --------------------------------------------------------------------------------------


def report(results: dict, connections: list[int]) -> None:
    backends = results["backends"]
    table = Table(title="1. model latency, median ms, 1 thread (in process)")
    for column in ("model", "batch", "eager", "inductor", "zentorch", "eager/inductor", "eager/zentorch"):
        table.add_column(column)
    for name in ("cnn", "transformer"):
        for batch in (1, 32):
            row = backends[name][f"batch{batch}_ms"]
            eager = row.get("eager")
            ratios = [
                f"{eager / row[b]:.2f}x" if b in row and eager else "-" for b in ("inductor", "zentorch")
            ]
            table.add_row(
                name, str(batch), *(str(row.get(b, "-")) for b in ("eager", "inductor", "zentorch")), *ratios
            )
    console.print(table)

    protocol = results["protocol"]
    client, codec = protocol["client_p50_ms"], protocol["codec_ms"]
    console.print(
        f"2. 1 MiB FP32 tensor through an echo model: tritonclient p50 JSON {client['json']} ms, "
        f"binary {client['binary']} ms ({client['json'] / client['binary']:.1f}x); codec alone JSON "
        f"{codec['json']} ms, binary {codec['binary']} ms "
        f"(JSON body {protocol['json_body_bytes'] / 1e6:.1f} MB)"
    )

    servers = results["servers"]
    table = Table(title="3. demo CNN, batch 1 requests, wrk -t1: req/s (p50 ms)")
    table.add_column("target")
    for conns in connections:
        for kind in ("json", "binary"):
            table.add_column(f"{kind} c={conns}")
    for label in LABELS:
        cells = []
        for conns in connections:
            for kind in ("json", "binary"):
                r = servers[f"{label}/{kind}/c{conns}"]
                cells.append(
                    f"{r['rps']:.0f} ({r['p50_ms']:.2f})" + (f" {r['errors']} err" if r["errors"] else "")
                )
        table.add_row(label, *cells)
    console.print(table)
    for conns in connections:
        for kind in ("json", "binary"):
            rps = {label: servers[f"{label}/{kind}/c{conns}"]["rps"] for label in LABELS}
            console.print(
                f"   {kind} c={conns}: ours/kserve {rps['ours'] / rps['kserve']:.2f}x, "
                f"ours+batching/kserve {rps['ours+batching'] / rps['kserve']:.2f}x, "
                f"pinned to one CPU ours/kserve {rps['ours@cpu1'] / rps['kserve@cpu1']:.2f}x"
            )
    if 1 in connections:
        for label, kind in (("ours", "binary"), ("ours@cpu1", "binary"), ("ours", "json")):
            run = servers[f"{label}/{kind}/c1"]
            p50, model_ms = run["p50_ms"], run["model_p50_ms"]
            console.print(
                f"   protocol overhead, CNN batch 1, {label} {kind}, 1 connection: p50 {p50:.3f} ms "
                f"- model p50 {model_ms:.3f} ms (in the server) = {p50 - model_ms:.3f} ms "
                f"= {(p50 - model_ms) / model_ms:.1%}"
            )
    for label in ("ours", "ours@cpu1"):
        rounds = servers.get(f"overhead/{label}", [])
        if rounds:
            model_ms = servers[f"{label}/binary/c1"]["model_p50_ms"]
            median = statistics.median(rounds)
            console.print(
                f"   protocol overhead, {label} binary, median of {len(rounds)} more rounds: "
                f"{median:.3f} ms = {median / model_ms:.1%} of model time "
                f"(rounds: {', '.join(map(str, rounds))} ms)"
            )
    cold = results["cold_start"]
    console.print("4. launch to ready, CNN: " + ", ".join(f"{k} {v} s" for k, v in cold.items()))
    console.print(f"machine: {machine()}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=8.0, help="seconds per wrk run")
    parser.add_argument("--connections", default="1,8", help="comma-separated wrk connection counts")
    parser.add_argument("--cache-dir", type=Path, default=None, help="compile cache for sections 1 and 3")
    parser.add_argument(
        "--overhead-rounds", type=int, default=5, help="extra 1-connection runs for the overhead"
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the raw results here")
    parser.add_argument(
        "--only",
        choices=["overhead"],
        default=None,
        help="overhead: just the protocol overhead rounds (our CNN server, binary, 1 connection)",
    )
    args = parser.parse_args()
    connections = [int(c) for c in args.connections.split(",")]
    from predictor.demo_models import build_demo_repository

    with tempfile.TemporaryDirectory(prefix="bench-predictor-") as temporary:
        work = Path(temporary)
        cache_dir = args.cache_dir or work / "cache"
        demo = build_demo_repository(work / "demo", backend="eager")
        if args.only == "overhead":
            rounds = max(1, args.overhead_rounds)
            results = bench_overhead(demo, work, cache_dir, args.duration / 2, rounds)
            report_overhead(results)
            if args.json:
                args.json.write_text(json.dumps(results, indent=2))
            return 0
        results = {
            "backends": bench_backends(demo, cache_dir, seconds=1.5),
            "protocol": bench_protocol(work, requests=15),
            "servers": bench_servers(demo, work, cache_dir, connections, args.duration, args.overhead_rounds),
            "cold_start": bench_cold_start(demo, work),
            "machine": machine(),
        }
    report(results, connections)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
