"""Section 3 of bench_predictor.py: `kpa predictor` vs KServe serving the same TorchScript CNN, the
same wrk client (-t1, Lua POST) sending identical V2 bodies, JSON and binary, at each connection count;
and the protocol overhead (our p50 minus the model's own median time per call in the same server).
"""

from __future__ import annotations

import json
import statistics
import subprocess
from pathlib import Path

import numpy as np
from _common import machine, parse_wrk
from bench_predictor_servers import Server, cnn_repository, console, model_p50_ms, start_kserve, start_ours

WRK_SCRIPT = """
wrk.method = "POST"
local file = io.open("{body}", "rb")
wrk.body = file:read("*all")
file:close()
wrk.headers["Content-Type"] = "{content_type}"
{extra}
"""

LABELS = ["kserve", "ours", "ours+batching", "kserve@cpu1", "ours@cpu1"]


def cnn_bodies(work: Path) -> dict[str, tuple[Path, str, str]]:
    """V2 request bodies for one CNN image: kind -> (file, content type, extra wrk Lua)."""
    image = np.random.default_rng(2).standard_normal((1, 3, 64, 64)).astype(np.float32)
    shape = [1, 3, 64, 64]
    json_body = json.dumps(
        {
            "id": "1",
            "inputs": [{"name": "image", "datatype": "FP32", "shape": shape, "data": image.ravel().tolist()}],
        }
    )
    header = json.dumps(
        {
            "id": "1",
            "inputs": [
                {
                    "name": "image",
                    "datatype": "FP32",
                    "shape": shape,
                    "parameters": {"binary_data_size": image.nbytes},
                }
            ],
        }
    )
    (work / "body.json").write_text(json_body)
    (work / "body.bin").write_bytes(header.encode() + image.tobytes())
    length = f'wrk.headers["Inference-Header-Content-Length"] = "{len(header)}"'
    return {
        "json": (work / "body.json", "application/json", ""),
        "binary": (work / "body.bin", "application/octet-stream", length),
    }


def wrk(server: Server, kind: tuple[Path, str, str], connections: int, duration: float, work: Path):
    body, content_type, extra = kind
    script = work / f"wrk-{body.stem}.lua"
    script.write_text(WRK_SCRIPT.format(body=body, content_type=content_type, extra=extra))
    url = f"http://127.0.0.1:{server.port}/v2/models/cnn/infer"
    args = [
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{max(1, round(duration))}s",
        "--latency",
        "-s",
        str(script),
        url,
    ]
    out = subprocess.run(args, capture_output=True, text=True, check=True, timeout=duration + 60).stdout
    return parse_wrk(out)


def bench_servers(
    demo: Path, work: Path, cache_dir: Path, connections: list[int], duration: float, overhead_rounds: int
) -> dict:
    bodies = cnn_bodies(work)
    plain = cnn_repository(demo, work / "ours-plain", "eager", batching=False)
    servers = [
        start_kserve(demo / "cnn" / "1" / "model.pt", work),
        start_ours(plain, cache_dir),
        start_ours(cnn_repository(demo, work / "ours-batched", "eager", batching=True), cache_dir),
        start_kserve(demo / "cnn" / "1" / "model.pt", work, cpu="1"),
        start_ours(plain, cache_dir, extra=("--cpu-affinity", "1")),
    ]
    labels = LABELS
    results: dict = {}
    try:
        for conns in connections:
            for kind, body in bodies.items():
                for label, server in zip(labels, servers, strict=True):
                    console.print(f"[dim]wrk {label} {kind} c={conns} ...[/dim]")
                    result = wrk(server, body, conns, duration, work)
                    results[f"{label}/{kind}/c{conns}"] = {
                        "rps": round(result.rps, 1),
                        "p50_ms": round(result.p50_ms, 3),
                        "p99_ms": round(result.p99_ms, 3),
                        "errors": result.errors,
                        "model_p50_ms": model_p50_ms(server),
                    }
        # protocol overhead at batch 1: repeated, since one 8 s sample on a shared machine is noisy
        for _ in range(overhead_rounds):
            for label in ("ours", "ours@cpu1"):
                server = servers[labels.index(label)]
                result = wrk(server, bodies["binary"], 1, duration / 2, work)
                overhead = result.p50_ms - model_p50_ms(server)
                results.setdefault(f"overhead/{label}", []).append(round(overhead, 3))
    finally:
        for server in servers:
            server.stop()
    return results


def bench_overhead(demo: Path, work: Path, cache_dir: Path, duration: float, rounds: int) -> dict:
    """Only the protocol overhead: our eager CNN server, unpinned and pinned, binary at 1 connection."""
    body = cnn_bodies(work)["binary"]
    plain = cnn_repository(demo, work / "ours-plain", "eager", batching=False)
    servers = {
        "ours": start_ours(plain, cache_dir),
        "ours@cpu1": start_ours(plain, cache_dir, extra=("--cpu-affinity", "1")),
    }
    results: dict = {}
    try:
        for _ in range(rounds):
            for label, server in servers.items():
                console.print(f"[dim]wrk {label} binary c=1 ...[/dim]")
                result = wrk(server, body, 1, duration, work)
                model_ms = model_p50_ms(server)
                assert model_ms is not None
                results.setdefault(label, []).append(
                    {"p50_ms": result.p50_ms, "model_p50_ms": model_ms, "errors": result.errors}
                )
    finally:
        for server in servers.values():
            server.stop()
    return results


def report_overhead(results: dict) -> None:
    for label, runs in results.items():
        overheads = [r["p50_ms"] - r["model_p50_ms"] for r in runs]
        shares = [r["p50_ms"] / r["model_p50_ms"] - 1 for r in runs]
        errors = sum(r["errors"] for r in runs)
        console.print(
            f"protocol overhead, {label} binary c=1, median of {len(runs)} rounds: "
            f"{statistics.median(overheads):.3f} ms = {statistics.median(shares):.1%} of model time "
            f"(model p50 {statistics.median(r['model_p50_ms'] for r in runs):.3f} ms; rounds: "
            f"{', '.join(f'{o:.3f}' for o in overheads)} ms; {errors} errors)"
        )
    console.print(f"machine: {machine()}")
