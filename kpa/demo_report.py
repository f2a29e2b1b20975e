"""`kpa demo`, reporting: the summary (requests, lost requests, latency, cold starts, pod-seconds,
processes left behind), its table, and the timeline plot of pods, concurrency and latency.
"""

from __future__ import annotations

import contextlib
import os
import signal
from itertools import pairwise
from pathlib import Path
from typing import Any

from kpa.demo_run import Run
from kpa.load import percentile


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


def summarize(record: Run) -> dict[str, Any]:
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


def print_summary(console, s: dict[str, Any], png: Path | None, elapsed: float, dashboard: str = "") -> None:
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
    if dashboard:
        table.add_row("dashboard", dashboard)
    table.add_row("demo time", f"{elapsed:.0f} s")
    console.print(table)


def plot(record: Run, path: Path, workload: str) -> Path | None:
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
