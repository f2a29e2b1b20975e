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
import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Any

import httpx

from kpa.load import (
    Client,
    LoadResult,
    Phase,
    Progress,
    Target,
    parse_phases,
    percentile,
    run_async,
    run_load,
)

REVISION = "classifier"
BATCH = 32  # sequences per request: ~12 ms of CPU each, so concurrency (and scaling) follows the rate
TOKENS = 32


@dataclass
class Sample:
    """One poll of `kpa up`'s /status."""

    t: float
    desired: int
    ready: int
    pods: int
    mode: str
    panicking: bool
    stable: float
    panic: float
    state: str


@dataclass
class Run:
    started: float = field(default_factory=time.time)
    samples: list[Sample] = field(default_factory=list)
    load_phases: list[tuple[str, float, float]] = field(default_factory=list)  # label, start, end
    results: list[tuple[float, LoadResult]] = field(default_factory=list)  # (start offset, result)
    pids: set[int] = field(default_factory=set)


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
    record = run_async(_demo(console, out, stack_file, body, path, burst, steady, not args.no_live))
    if record is None:
        return 1
    summary = _summarize(record)
    png = _plot(record, out / "timeline.png", workload)
    _print_summary(console, summary, png, time.monotonic() - started)
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
        extra = ""
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
        '      autoscaling.knative.dev/max-scale: "3"\n'
        "    timeoutSeconds: 60\n"
        "    activatorQueueBound: 5000  # hold the whole burst while pods start, as Knative does\n"
        "    startupTimeoutSeconds: 60\n" + extra
    )
    return stack_file, body, path, workload


# ---- running it --------------------------------------------------------------------------------------


async def _demo(
    console,
    out: Path,
    stack_file: Path,
    body: bytes,
    path: str,
    burst: list[Phase],
    steady: list[Phase],
    live: bool,
) -> Run | None:
    ready_file = out / "ready.json"
    ready_file.unlink(missing_ok=True)
    log_path = out / "kpa-up.log"
    with log_path.open("wb") as log:
        up = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "kpa",
                "up",
                str(stack_file),
                "--port",
                "0",
                "--admin-port",
                "0",
                "--no-live",
                "--log-dir",
                str(out / "pods"),
                "--ready-file",
                str(ready_file),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    record = Run()
    try:
        addresses = await _wait_ready_file(ready_file, up)
        if addresses is None:
            console.print(f"[red]kpa up did not start; see {log_path}[/]")
            return None
        console.print(f"kpa up: entry {addresses['entry']}, admin {addresses['admin']} (log: {log_path})")
        entry = addresses["entry"]
        target = Target.from_url(
            entry + path,
            method="POST" if body else "GET",
            host_header=REVISION,
            body=body,
            headers=(("Content-Type", "application/json"),) if body else (),
        )
        async with httpx.AsyncClient(timeout=2.0) as admin:
            poller = _Poller(admin, addresses["admin"], record)
            view = asyncio.create_task(_view(console, poller, live))
            try:
                await _wait_for_zero(poller, record, "idle: the initial pod scales away", 40.0)
                await _drive(console, poller, record, [("burst", burst), ("steady", steady)], target)
                await _wait_for_zero(poller, record, "idle: back to zero", 40.0)
            finally:
                view.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await view
                console.print()
    finally:
        await _stop_up(up)
    return record


async def _wait_ready_file(path: Path, up: subprocess.Popen, timeout: float = 30.0) -> dict[str, Any] | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and up.poll() is None:
        with contextlib.suppress(OSError, ValueError):
            return json.loads(path.read_text())
        await asyncio.sleep(0.1)
    return None


class _Poller:
    """Polls /status twice a second; the timeline and the live view both read from it."""

    def __init__(self, client: httpx.AsyncClient, admin: str, record: Run) -> None:
        self.client = client
        self.url = admin + "/status"
        self.record = record
        self.latest: dict[str, Any] | None = None
        self.progress: Progress | None = None
        self.stage = ""

    async def poll(self) -> dict[str, Any] | None:
        with contextlib.suppress(httpx.HTTPError, ValueError):
            doc = (await self.client.get(self.url)).json()
            self.latest = doc
            self.record.pids.update(doc.get("pod_pids", []))
            row = doc["revisions"][0]
            self.record.samples.append(
                Sample(
                    time.time() - self.record.started,
                    row["desired_pods"],
                    row["ready_pods"],
                    row["pods"],
                    row["mode"],
                    row["panicking"],
                    row["stable_concurrency"],
                    row["panic_concurrency"],
                    row["state"],
                )
            )
        return self.latest


async def _wait_for_zero(poller: _Poller, record: Run, label: str, max_wait: float) -> None:
    """Idle until the revision has no pod left (or ``max_wait`` seconds passed)."""
    poller.stage = label
    start = time.time() - record.started
    deadline = time.monotonic() + max_wait
    while time.monotonic() < deadline:
        doc = await poller.poll()
        if doc and doc["revisions"][0]["pods"] == 0 and doc["revisions"][0]["desired_pods"] == 0:
            break
        await asyncio.sleep(0.5)
    record.load_phases.append((label, start, time.time() - record.started))


async def _drive(
    console, poller: _Poller, record: Run, stages: list[tuple[str, list[Phase]]], target: Target
) -> None:
    """Run the stages' load phases back to back in one open-loop run (no gap between stages)."""
    phases = [phase for _, stage in stages for phase in stage]
    labels = [label for label, stage in stages for _ in stage]
    start = time.time() - record.started
    client = Client(target, max_connections=256, timeout=60.0)
    progress = poller.progress = Progress()

    async def follow() -> None:
        while True:
            poller.stage = labels[progress.phase]
            await poller.poll()
            await asyncio.sleep(0.5)

    following = asyncio.create_task(follow())
    try:
        result = await run_load(client, phases, progress)
    finally:
        following.cancel()
        client.close()
    record.results.append((start, result))
    offset, index = start, 0
    for label, stage in stages:
        length = sum(p.duration for p in stage)
        indices = range(index, index + len(stage))
        index += len(stage)
        end = offset + length if index < len(phases) else time.time() - record.started
        record.load_phases.append((label, offset, end))
        offset += length
        mine = [r for r in result.records if r.phase in indices]
        ok = sorted(r.latency for r in mine if 200 <= r.status < 300)
        p50 = f"{percentile(ok, 50) * 1000:.0f}" if ok else "-"
        p99 = f"{percentile(ok, 99) * 1000:.0f}" if ok else "-"
        console.print(f"  {label}: {len(mine)} requests, {len(ok)} ok, p50 {p50} ms, p99 {p99} ms")


async def _poll_forever(poller: _Poller) -> None:
    while True:
        await poller.poll()
        await asyncio.sleep(0.5)


async def _view(console, poller: _Poller, live: bool) -> None:
    from rich.console import Group
    from rich.live import Live
    from rich.text import Text

    from kpa.status import status_table, summarize_rows

    def renderable():
        progress = poller.progress
        line = f"stage: {poller.stage}"
        if progress is not None and poller.stage in ("burst", "steady"):
            line += f" — sent {progress.sent}, ok {progress.ok}, in flight {progress.in_flight}"
        if poller.latest is None:
            return Text(line)
        return Group(status_table(poller.latest, console.width), Text(line))

    if not live:
        last = ""
        while True:
            await asyncio.sleep(1.0)
            if poller.latest:
                text = f"{poller.stage}: {summarize_rows(poller.latest['revisions'])}"
                if text != last:
                    console.print(text)
                    last = text
    with Live(renderable(), console=console, refresh_per_second=4, transient=False) as view:
        while True:
            await asyncio.sleep(0.25)
            view.update(renderable())


async def _stop_up(up: subprocess.Popen) -> None:
    if up.poll() is None:
        up.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 20.0
        while up.poll() is None and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
    if up.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(up.pid, signal.SIGKILL)
        up.wait()


# ---- reporting ---------------------------------------------------------------------------------------


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(OSError):
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
        return state != "Z"
    return True


def _summarize(record: Run) -> dict[str, Any]:
    records = [r for _, result in record.results for r in result.records]
    ok = sorted(r.latency for r in records if 200 <= r.status < 300)
    failed = [r for r in records if not 200 <= r.status < 300]
    samples = record.samples
    pod_seconds = sum(a.pods * (b.t - a.t) for a, b in pairwise(samples))
    cold_starts = sum(1 for a, b in pairwise(samples) if a.desired == 0 and b.desired > 0)
    cold = [r.latency for r in records if r.cold]
    leftovers = sorted(pid for pid in record.pids if _alive(pid))
    for pid in leftovers:  # never leave anything behind, but report it: it would be a bug
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    duration = record.load_phases[-1][2] - record.load_phases[0][1] if record.load_phases else 0.0
    return {
        "requests": len(records),
        "ok": len(ok),
        "lost_requests": len(failed),
        "failures": sorted({(r.status, r.error) for r in failed}),
        "latency_ms": {f"p{q}": round(percentile(ok, q) * 1000, 1) if ok else None for q in (50, 90, 99)},
        "cold_starts": cold_starts,
        "requests_held_for_a_cold_start": len(cold),
        "cold_start_latency_ms_max": round(max(cold) * 1000, 1) if cold else None,
        "max_pods": max((s.pods for s in samples), default=0),
        "pod_seconds": round(pod_seconds, 1),
        "always_on_pod_seconds": round(max((s.pods for s in samples), default=0) * duration, 1),
        "panic_seconds": round(sum(b.t - a.t for a, b in pairwise(samples) if a.panicking), 1),
        "processes_started": len(record.pids),
        "leftover_processes": len(leftovers),
        "stages": [
            {"stage": label, "start_s": round(a, 1), "end_s": round(b, 1)}
            for label, a, b in record.load_phases
        ],
    }


def _print_summary(console, s: dict[str, Any], png: Path | None, elapsed: float) -> None:
    from rich.table import Table

    table = Table(title="kpa demo: summary", show_header=False, title_justify="left")
    lost = s["lost_requests"]
    table.add_row("requests", f"{s['requests']} sent, {s['ok']} answered 2xx")
    table.add_row("lost requests", f"[green]{lost}[/]" if lost == 0 else f"[red]{lost}[/] {s['failures']}")
    lat = s["latency_ms"]
    table.add_row("latency", f"p50 {lat['p50']} ms, p90 {lat['p90']} ms, p99 {lat['p99']} ms")
    table.add_row(
        "cold starts",
        f"{s['cold_starts']} (requests held for one: {s['requests_held_for_a_cold_start']}, "
        f"longest wait {s['cold_start_latency_ms_max']} ms)",
    )
    table.add_row(
        "pods",
        f"max {s['max_pods']}; {s['pod_seconds']} pod-seconds "
        f"(vs {s['always_on_pod_seconds']} kept at the peak), panic {s['panic_seconds']} s",
    )
    left = s["leftover_processes"]
    table.add_row(
        "processes",
        f"{s['processes_started']} started, "
        + ("[green]none left running[/]" if left == 0 else f"[red]{left} were left (killed)[/]"),
    )
    if png is not None:
        table.add_row("timeline", str(png))
    table.add_row("demo time", f"{elapsed:.0f} s")
    console.print(table)


def _plot(record: Run, path: Path, workload: str) -> Path | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    samples = record.samples
    if not samples:
        return None
    t = [s.t for s in samples]
    fig, (ax_pods, ax_conc, ax_lat) = plt.subplots(3, 1, figsize=(11, 8.5), sharex=True)
    for label, start, end in record.load_phases:
        for ax in (ax_pods, ax_conc, ax_lat):
            ax.axvspan(start, end, color="0.93" if "idle" in label else "#fff3d6", zorder=0)
        ax_pods.text(
            (start + end) / 2,
            1.0,
            label.split(":")[0],
            ha="center",
            va="bottom",
            transform=ax_pods.get_xaxis_transform(),
            fontsize=9,
        )
    ax_pods.step(t, [s.desired for s in samples], where="post", label="desired", color="tab:blue")
    ax_pods.step(t, [s.ready for s in samples], where="post", label="ready", color="tab:green")
    proxy = [1 if s.mode == "proxy" else 0 for s in samples]
    ax_pods.fill_between(
        t, 0, [p * 0.25 for p in proxy], step="post", color="tab:purple", alpha=0.3, label="activator in path"
    )
    panic = [s.panicking for s in samples]
    ax_pods.fill_between(
        t, 0, [0.5 if p else 0 for p in panic], step="post", color="tab:red", alpha=0.25, label="panic"
    )
    ax_pods.set_ylabel("pods")
    ax_pods.legend(loc="upper right", fontsize=8)
    ax_conc.plot(t, [s.stable for s in samples], label="stable-window concurrency", color="tab:blue")
    ax_conc.plot(t, [s.panic for s in samples], label="panic-window concurrency", color="tab:red")
    rate_ax = ax_conc.twinx()
    seconds: dict[int, int] = {}
    for start, result in record.results:
        for r in result.records:
            second = int(start + r.sent_at)
            seconds[second] = seconds.get(second, 0) + 1
    if seconds:
        xs = sorted(seconds)
        rate_ax.bar(xs, [seconds[x] for x in xs], width=1.0, align="edge", color="0.6", alpha=0.35)
    rate_ax.set_ylabel("requests sent per second", color="0.4")
    ax_conc.set_ylabel("concurrency")
    ax_conc.legend(loc="upper right", fontsize=8)
    for start, result in record.results:
        ok = [(start + r.sent_at, r.latency * 1000) for r in result.records if 200 <= r.status < 300]
        bad = [(start + r.sent_at, r.latency * 1000) for r in result.records if not 200 <= r.status < 300]
        cold = [(start + r.sent_at, r.latency * 1000) for r in result.records if r.cold]
        if ok:
            ax_lat.scatter(*zip(*ok, strict=True), s=3, color="tab:green", alpha=0.4)
        if cold:
            ax_lat.scatter(*zip(*cold, strict=True), s=8, color="tab:purple", label="held for a cold start")
        if bad:
            ax_lat.scatter(*zip(*bad, strict=True), s=12, color="tab:red", marker="x", label="failed")
    ax_lat.set_yscale("log")
    ax_lat.set_ylabel("latency (ms)")
    ax_lat.set_xlabel("seconds since the stack started")
    handles, labels = ax_lat.get_legend_handles_labels()
    if handles:
        unique = dict(zip(labels, handles, strict=True))
        ax_lat.legend(unique.values(), unique.keys(), loc="upper right", fontsize=8)
    fig.suptitle(f"kpa demo — {workload}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
