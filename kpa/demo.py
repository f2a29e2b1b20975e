"""`kpa demo` (what `make demo` runs): a real revision scaled 0 → N → 0 on this machine.

1. Builds a small model repository (a 2-layer Transformer classifier, TorchScript) with the predictor.
2. Starts `kpa up` (autoscaler + activator + entry point) as a child process; each pod it starts is a
   `kpa queue-proxy` plus a `kpa predictor` serving that repository.
3. Drives traffic through the entry: idle until the initial pod is scaled away, a burst, a steady
   stretch, then idle until the revision is back at zero — showing the live scaling table meanwhile.
4. Prints a summary (cold starts, latency percentiles, pod-seconds, lost requests) and plots a
   timeline of pods and concurrency to ``demo-out/timeline.png``.
5. Stops `kpa up`, which drains and stops every pod, and checks that no process it started is left.

If the predictor cannot run here (no torch), the revision serves the built-in sample app instead and
the output says so. Windows are Knative's shortest (6 s stable window) so the whole cycle fits in
about a minute and a half.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from kpa.demo_report import plot, print_summary, summarize
from kpa.demo_run import REVISION, demo
from kpa.load import parse_phases, run_async

BATCH = 32  # sequences per request: ~12 ms of CPU each, so concurrency (and scaling) follows the rate
TOKENS = 32


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--out", default="demo-out", help="directory for the stack file, logs and timeline.png"
    )
    parser.add_argument(
        "--sample-app", action="store_true", help="serve the built-in sample app instead of the torch model"
    )
    parser.add_argument("--burst", default="rate:60:10", help="the burst phase (kpa load syntax)")
    parser.add_argument("--steady", default="rate:25:20", help="the steady phase (kpa load syntax)")
    parser.add_argument("--no-live", action="store_true", help="print status lines instead of the live table")


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    console = Console()
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    try:
        burst, steady = parse_phases([args.burst]), parse_phases([args.steady])
    except ValueError as exc:
        console.print(f"kpa demo: {exc}")
        return 2
    console.rule("[bold]kpa demo: Knative-style autoscaling of local processes")
    stack_file, body, path, workload = _prepare(out, args.sample_app, console)
    console.print(f"stack file: {stack_file}  ({workload})")
    record = run_async(demo(console, out, stack_file, body, path, burst, steady, not args.no_live))
    if record is None:
        return 1
    summary = summarize(record)
    png = plot(record, out / "timeline.png", workload)
    print_summary(console, summary, png, time.monotonic() - started, record.dashboard)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return 0 if summary["lost_requests"] == 0 and summary["leftover_processes"] == 0 else 1


# ---- preparing the revision --------------------------------------------------------------------------


def _prepare(out: Path, sample_app: bool, console) -> tuple[Path, bytes, str, str]:
    """Write the stack file (and the model repository); returns it, the request body/path and a label."""
    if not sample_app:
        try:
            from predictor.demo_models import DEMO_MODELS, build_demo_repository
        except ImportError as exc:
            console.print(f"[yellow]the predictor cannot run here ({exc}); using the built-in sample app[/]")
            sample_app = True
    if sample_app:
        command = "python -m kpa.sample_app --delay 0.02"
        extra, scrape = "", ""
        body, path = b"", "/"
        workload = "built-in sample app, 20 ms per request"
    else:
        t0 = time.monotonic()
        repository = build_demo_repository(out / "models", models=("transformer",), formats=("torchscript",))
        console.print(
            f"model repository: {repository} (Transformer classifier, built in {time.monotonic() - t0:.1f}s)"
        )
        model = DEMO_MODELS["transformer"]
        tokens = model.inputs(BATCH, seed=1).astype(int).ravel().tolist()
        request = {
            "inputs": [
                {"name": model.input_name, "shape": [BATCH, TOKENS], "datatype": "INT64", "data": tokens}
            ]
        }
        body, path = json.dumps(request).encode(), "/v2/models/transformer/infer"
        command = f"python -m kpa predictor --model-repository {repository} --log-level warning"
        extra = "    readinessProbe: {httpGet: {path: /v2/health/ready}}\n"
        # KServe's opt-in: Prometheus scrapes the model server's own /metrics too (docs/metrics.md).
        scrape = '      serving.kserve.io/enable-prometheus-scraping: "true"\n'
        workload = (
            f"kpa predictor, Transformer classifier, {BATCH} sequences per request (torch eager, 1 thread)"
        )
    stack_file = out / "stack.yaml"
    stack_file.write_text(
        "# Written by `kpa demo`. Knative's shortest stable window so the demo fits in a minute or two.\n"
        "config:\n"
        "  stable-window: 6s\n"
        "  panic-window-percentage: '50'  # a 3 s panic window (10 % of 6 s would be Knative's 1 s minimum)\n"
        "  scale-to-zero-grace-period: 2s\n"
        "revisions:\n"
        f"  - name: {REVISION}\n"
        f"    command: {command}\n"
        "    containerConcurrency: 1\n"
        "    annotations:\n"
        '      autoscaling.knative.dev/target-burst-capacity: "2"\n'
        '      autoscaling.knative.dev/max-scale: "3"\n' + scrape + "    timeoutSeconds: 60\n"
        "    activatorQueueBound: 5000  # hold the whole burst while pods start, as Knative does\n"
        "    startupTimeoutSeconds: 60\n" + extra
    )
    return stack_file, body, path, workload
