"""Pictures of a run (``timeline.png``) and of a sweep (cost against tail latency)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def _spans(seconds: Sequence[int], flags: Sequence[bool]) -> list[tuple[int, int]]:
    """Contiguous runs of True as (start, end) seconds."""
    spans, start = [], None
    for second, flag in zip(seconds, flags, strict=True):
        if flag and start is None:
            start = second
        elif not flag and start is not None:
            spans.append((start, second))
            start = None
    if start is not None:
        spans.append((start, seconds[-1] + 1))
    return spans


def plot_timeline(rows: list[dict[str, Any]], path: Path, title: str) -> None:
    seconds = [r["second"] for r in rows]
    fig, (pods, load, traffic) = plt.subplots(3, 1, figsize=(11, 8.5), sharex=True)
    fig.suptitle(title, fontsize=11)

    for start, end in _spans(seconds, [r["mode"] == "proxy" for r in rows]):
        pods.axvspan(start, end, color="0.92", lw=0)
    for start, end in _spans(seconds, [bool(r["panicking"]) for r in rows]):
        for ax in (pods, load):
            ax.axvspan(start, end, color="tab:red", alpha=0.08, lw=0)
    pods.step(seconds, [r["desired_pods"] for r in rows], where="post", label="desired", color="tab:orange")
    pods.step(
        seconds, [r["replicas"] for r in rows], where="post", label="replicas", color="tab:purple", ls=":"
    )
    pods.fill_between(
        seconds, [r["ready_pods"] for r in rows], step="post", alpha=0.35, color="tab:blue", label="ready"
    )
    pods.set_ylabel("pods")
    pods.legend(loc="upper left", fontsize=8, title="grey: activator in path, red: panic", title_fontsize=8)

    load.plot(seconds, [r["stable_concurrency"] for r in rows], label="stable window", color="tab:green")
    load.plot(seconds, [r["panic_concurrency"] for r in rows], label="panic window", color="tab:red", lw=0.8)
    load.plot(seconds, [r["in_flight"] for r in rows], label="requests in the system", color="0.4", lw=0.6)
    load.set_ylabel("observed concurrency")
    load.legend(loc="upper left", fontsize=8)

    traffic.plot(seconds, [r["arrivals"] for r in rows], label="arrivals", color="tab:blue", lw=0.7)
    traffic.plot(seconds, [r["completions"] for r in rows], label="completions", color="tab:green", lw=0.7)
    failures = [r["rejections"] + r["timeouts"] for r in rows]
    if any(failures):
        traffic.plot(seconds, failures, label="503 + 504", color="tab:red", lw=0.9)
    traffic.set_ylabel("requests / s")
    traffic.set_xlabel("simulated seconds")
    traffic.legend(loc="upper left", fontsize=8)

    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_cost_vs_p99(
    results: list[dict[str, Any]], path: Path, title: str, frontier: Sequence[bool] | None = None
) -> None:
    """One point per grid cell: pod-seconds against p99 latency, labelled with the cell's values.

    With ``frontier`` (one flag per result, :func:`simulation.pareto.frontier`) the Pareto-optimal
    points are drawn in red and joined, cheapest first; cells without a p99 are counted in a note.
    """
    fig, ax = plt.subplots(figsize=(8, 5.5))
    flags = list(frontier) if frontier is not None else [False] * len(results)
    front: list[tuple[float, float]] = []
    for result, on in zip(results, flags, strict=True):
        p99 = result["p99"]
        if p99 is None:
            continue
        ax.scatter(result["pod_seconds"], p99, color="tab:red" if on else "tab:blue", zorder=3)
        ax.annotate(
            result["label"],
            (result["pod_seconds"], p99),
            fontsize=7,
            xytext=(4, 3),
            textcoords="offset points",
            fontweight="bold" if on else "normal",
        )
        if on:
            front.append((result["pod_seconds"], p99))
    if front:
        front.sort()
        ax.step(*zip(*front, strict=True), where="post", color="tab:red", alpha=0.5, label="Pareto frontier")
        ax.legend(loc="upper right", fontsize=8)
    unplotted = sum(result["p99"] is None for result in results)
    if unplotted:
        ax.text(
            0.01,
            0.01,
            f"{unplotted} cells without a p99 (no request completed)",
            fontsize=7,
            transform=ax.transAxes,
        )
    ax.set_xlabel("pod-seconds (cost)")
    ax.set_ylabel("p99 latency (s)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_live_vs_simulated(
    live: list[dict[str, Any]],
    simulated: list[dict[str, Any]],
    path: Path,
    title: str,
    band: tuple[list[float], list[float]] | None = None,
) -> None:
    """Ready and desired pods over time, the live stack against the simulation of the same scenario.

    ``band`` is the lowest and highest simulated ready count per second across replicates: how far
    chance alone moves the simulated line, so a live line inside it agrees with the model.
    """
    fig, ax = plt.subplots(figsize=(11, 4.5))
    if band is not None:
        low, high = band
        ax.fill_between(
            range(len(low)), low, high, step="post", color="tab:orange", alpha=0.18,
            label="ready, simulated (range over replicates)",
        )  # fmt: skip
    for rows, side, color in ((live, "live", "tab:blue"), (simulated, "simulated", "tab:orange")):
        seconds = [r["second"] for r in rows]
        ax.step(seconds, [r["ready_pods"] for r in rows], where="post", label=f"ready, {side}", color=color)
        # Desired -1 is the autoscaler's "no decision yet": drawn as 0.
        desired = [max(r["desired_pods"], 0) for r in rows]
        ax.step(seconds, desired, where="post", label=f"desired, {side}", color=color, ls=":", lw=0.8)
    ax.set_xlabel("seconds")
    ax.set_ylabel("pods")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
