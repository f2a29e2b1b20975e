"""`kpa demo`: the decision core scaling one revision through a step load, under simulated time.

An interim demonstration (until the local stack lands): a :class:`RevisionAutoscaler` with Knative's
defaults and a target of 10 concurrent requests per pod is fed one revision-wide stat per simulated
second while the load steps idle → burst → steady → idle. An idealised actuator obeys each applied
decision and new pods become ready a few seconds later. Every change of decision is printed, then a
summary: panic on the burst, scale-out, settling, and the slow, sequenced way back to zero.
"""

from __future__ import annotations

import argparse
from collections import deque
from dataclasses import dataclass

from rich.console import Console
from rich.table import Table

from autoscaler.config import ConfigError
from autoscaler.revision import RevisionAutoscaler, ScaleDecision, settings_from
from autoscaler.stat import Stat

START = 1_700_000_000.0  # simulated clock origin (any non-negative epoch works)
TICK = 2


@dataclass(frozen=True)
class Phase:
    name: str
    seconds: int
    concurrency: float


PHASES = (
    Phase("idle", 100, 0.0),
    Phase("burst", 20, 300.0),
    Phase("steady", 80, 60.0),
    Phase("idle", 160, 0.0),
)


def configure(parser: argparse.ArgumentParser) -> None:
    parser.description = __doc__.split("\n\n")[0]
    parser.add_argument(
        "--annotation",
        "-a",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an autoscaling.knative.dev/* annotation for the revision (repeatable); "
        'default: autoscaling.knative.dev/target="10"',
    )
    parser.add_argument("--pod-startup", type=float, default=4.0, help="seconds a new pod takes to be ready")
    parser.add_argument("--every", action="store_true", help="print every decision, not only changes")


def _annotations(pairs: list[str]) -> dict[str, str]:
    annotations = {"autoscaling.knative.dev/target": "10"}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise ConfigError(f"--annotation {pair!r}: expected KEY=VALUE")
        annotations[key if "/" in key else f"autoscaling.knative.dev/{key}"] = value
    return annotations


class Pods:
    """An actuator that obeys at once: new pods become ready after ``startup`` seconds."""

    def __init__(self, ready: int, startup: float) -> None:
        self.ready = ready
        self.startup = startup
        self.starting: deque[float] = deque()  # ready-at times

    def scale(self, desired: int, now: float) -> None:
        wanted = desired - self.ready - len(self.starting)
        for _ in range(max(wanted, 0)):
            self.starting.append(now + self.startup)
        while wanted < 0 and self.starting:
            self.starting.pop()
            wanted += 1
        if wanted < 0:
            self.ready += wanted

    def advance(self, now: float) -> None:
        while self.starting and self.starting[0] <= now:
            self.starting.popleft()
            self.ready += 1


def _row(table: Table, at: float, load: float, pods: Pods, d: ScaleDecision) -> None:
    want = "?" if d.desired_pods < 0 else str(d.desired_pods)
    table.add_row(
        f"{at:5.0f}",
        f"{load:g}",
        str(pods.ready),
        want + (" ✓" if d.apply else ""),
        f"{d.stable:.1f}",
        f"{d.panic:.1f}",
        "[bold red]yes[/]" if d.panicking else "no",
        d.mode,
        d.state,
        d.reason,
    )


def run(args: argparse.Namespace) -> int:
    console = Console()
    if not console.is_terminal:
        console = Console(width=150)  # a log or a pipe: keep each decision on one line
    try:
        settings = settings_from(_annotations(args.annotation))
    except ConfigError as exc:
        console.print(f"[red]kpa demo: {exc}[/]")
        return 2
    pods = Pods(ready=settings.initial_scale, startup=args.pod_startup)
    rev = RevisionAutoscaler(settings, START, ready_pods=pods.ready)
    table = Table(title=f"one revision, target value {settings.spec.target_value:g} per pod, simulated time")
    for column in (
        "t (s)",
        "load",
        "ready",
        "desired",
        "stable",
        "panic",
        "panicking",
        "mode",
        "state",
        "why",
    ):
        table.add_column(column, justify="right" if column not in ("mode", "state", "why") else "left")

    previous: tuple | None = None
    peak = decisions = second = 0
    events: list[tuple[int, str]] = []
    panicking, state = False, rev.state
    for number, phase in enumerate(PHASES, 1):
        events.append((second, f"phase {number}: {phase.name} at concurrency {phase.concurrency:g}"))
        for _ in range(phase.seconds):
            now = START + second + 0.5
            pods.advance(now)
            source = "activator" if rev.mode == "proxy" or pods.ready == 0 else "service-scraper"
            poke = rev.record(Stat(source, average_concurrent_requests=phase.concurrency), now)
            if poke or second % TICK == TICK - 1:
                d = rev.decide(now, pods.ready)
                decisions += 1
                had_pods = pods.ready + len(pods.starting)
                if d.apply and d.desired_pods >= 0:
                    pods.scale(d.desired_pods, now)
                peak = max(peak, pods.ready + len(pods.starting))
                if had_pods == 0 and d.apply and d.desired_pods > 0:
                    events.append(
                        (second, f"scale from zero{' (poked)' if poke else ''}: {d.desired_pods} pods")
                    )
                if had_pods > 0 and d.apply and d.desired_pods == 0:
                    events.append((second, "scaled to zero"))
                if d.panicking != panicking:
                    panicking = d.panicking
                    events.append((second, "panic starts" if panicking else "panic ends"))
                if d.state != state:
                    state = d.state
                    events.append((second, f"revision {state}"))
                key = (d.desired_pods, d.apply, d.panicking, d.mode, d.state, d.reason)
                if args.every or key != previous:
                    _row(table, second, phase.concurrency, pods, d)
                previous = key
            second += 1

    console.print(table)
    console.print(f"[bold]{decisions} decisions over {second} simulated seconds; peak {peak} pods.[/]")
    console.print("Timeline:")
    for at, what in events:
        console.print(f"  t={at:>4}s  {what}")
    return 0
