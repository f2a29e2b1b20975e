"""Check the simulator against queueing theory and Knative's timing; write docs/simulation-validation.md.

``python -m simulation.validation [--seeds 10] [--out docs/simulation-validation.md]``

* Pinned autoscaler (min-scale = max-scale = N), activator always in the path (TBC = -1), cc = 1:
  one pooled FIFO queue in front of N servers — Erlang C.
* Pinned, activator out of the path (TBC = 0), random routing: N independent queue-proxies, each
  M/M/cc/K with K = 11·cc (cc executing, 10·cc queued, 503 beyond).
* ``shared`` service model on one pod with c cores and no concurrency limit: processor sharing,
  whose number in system is the M/M/c birth-death chain, so its mean response is Erlang C's.
* Autoscaling dynamics: a step from zero and back, against the times Knative's algorithm implies.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from simulation.engine import Simulation
from simulation.queueing import QueueFigures, confidence_interval, erlang_c, mmck
from simulation.scenario import parse_scenario

ANNOTATION = "autoscaling.knative.dev/"


def pinned(
    pods: int,
    cc: int,
    tbc: int,
    rate: float,
    mean_service: float,
    duration: float,
    warmup: float,
    *,
    service_model: str = "parallel",
    cores: float | None = None,
) -> dict[str, Any]:
    """A scenario with the autoscaler pinned at ``pods`` and exponential service times."""
    revision: dict[str, Any] = {
        "container_concurrency": cc,
        "service_model": service_model,
        "service_time": {"dist": "exponential", "mean": mean_service},
        "cold_start": {"dist": "constant", "value": 1.0},
        "timeout": 3600,
        "annotations": {
            ANNOTATION + "min-scale": str(pods),
            ANNOTATION + "max-scale": str(pods),
            ANNOTATION + "target-burst-capacity": str(tbc),
        },
    }
    if cores is not None:
        revision["cores"] = cores
    return {
        "duration": duration,
        "warmup": warmup,
        "revision": revision,
        "workload": [{"type": "poisson", "rate": rate, "duration": duration}],
    }


@dataclass(frozen=True)
class Measured:
    p_wait: float
    mean_wait: float
    mean_response: float
    p_block: float


def measure(document: dict[str, Any], seed: int) -> Measured:
    sim = Simulation(parse_scenario(document), seed).run()
    counters = sim.counters
    waits = counters.waits.values()
    return Measured(
        p_wait=float(np.mean(waits > 0)),
        mean_wait=float(waits.mean()),
        mean_response=math.nan if (mean := counters.latencies.mean()) is None else mean,
        p_block=counters.rejected / counters.requests,
    )


@dataclass(frozen=True)
class Case:
    title: str
    document: dict[str, Any]
    theory: QueueFigures


def queueing_cases(duration: float = 3000.0, warmup: float = 100.0) -> dict[str, list[Case]]:
    """The comparisons in the validation document; durations are per replication."""
    return {
        "erlang_c": [
            Case(
                "N=5, λ=4, E[S]=1 (ρ=0.8)",
                pinned(5, 1, -1, 4.0, 1.0, duration, warmup),
                erlang_c(5, 4.0, 1.0),
            ),
            Case(
                "N=10, λ=80, E[S]=0.1 (ρ=0.8)",
                pinned(10, 1, -1, 80, 0.1, duration, warmup),
                erlang_c(10, 80, 10),
            ),
            Case(
                "N=20, λ=18, E[S]=1 (ρ=0.9)",
                pinned(20, 1, -1, 18, 1.0, duration, warmup),
                erlang_c(20, 18, 1.0),
            ),
        ],
        "mmck": [
            Case(
                "N=5, cc=1, λ=4 (ρ=0.8)", pinned(5, 1, 0, 4.0, 1.0, duration, warmup), mmck(1, 11, 0.8, 1.0)
            ),
            Case(
                "N=10, cc=1, λ=120, E[S]=0.1 (ρ=1.2)",
                pinned(10, 1, 0, 120, 0.1, duration, warmup),
                mmck(1, 11, 12, 10),
            ),
            Case(
                "N=4, cc=2, λ=7 (ρ=0.875)",
                pinned(4, 2, 0, 7.0, 1.0, duration, warmup),
                mmck(2, 22, 1.75, 1.0),
            ),
        ],
        "shared": [
            Case(
                "1 pod, 1 core, λ=8, E[S]=0.1 (M/M/1-PS)",
                pinned(1, 0, 0, 8.0, 0.1, duration, warmup, service_model="shared", cores=1),
                erlang_c(1, 8.0, 10.0),
            ),
            Case(
                "1 pod, 4 cores, λ=3, E[S]=1 (M/M/4-PS)",
                pinned(1, 0, 0, 3.0, 1.0, duration, warmup, service_model="shared", cores=4),
                erlang_c(4, 3.0, 1.0),
            ),
        ],
    }


def replicate(case: Case, seeds: int) -> dict[str, tuple[float, float]]:
    runs = [measure(case.document, seed) for seed in range(1, seeds + 1)]
    return {
        name: confidence_interval([getattr(r, name) for r in runs]) for name in Measured.__dataclass_fields__
    }


def within(theory: float, measured: tuple[float, float]) -> bool:
    mean, half = measured
    return abs(mean - theory) <= half


# -- autoscaling dynamics ------------------------------------------------------------------------------


def step_scenario(
    cc: int,
    tbc: int,
    rate: float,
    service: float,
    cold_start: float,
    *,
    idle: float = 120.0,
    busy: float = 120.0,
) -> dict[str, Any]:
    """Silence (long enough for the initial pod to scale away), a step to ``rate`` (constant service
    time) for ``busy`` seconds, then silence again."""
    return {
        "duration": idle + busy + 160,
        "revision": {
            "container_concurrency": cc,
            "service_time": {"dist": "constant", "value": service},
            "cold_start": {"dist": "constant", "value": cold_start},
            "annotations": {ANNOTATION + "target-burst-capacity": str(tbc)},
        },
        "config": {"enable-scale-to-zero": "true"},
        "workload": [
            {"type": "poisson", "rate": 0, "duration": idle},
            {"type": "constant", "rate": rate, "duration": busy},
            {"type": "poisson", "rate": 0, "duration": 160},
        ],
    }


@dataclass(frozen=True)
class Dynamics:
    needed_pods: int  # P = ceil(λ·S / TV)
    first_request: float
    desired_at: float | None  # first timeline second with desired >= P
    ready_at: float | None  # first timeline second with ready >= P
    last_request: float
    zero_at: float | None  # first second, after the last request, with the scale target at 0
    proxied_since: float  # when the activator last entered the path before the stable average hit 0
    ready_when_idle: int  # ready pods one stable window after the last request
    stable_window: float
    grace_period: float
    cold_start: float

    @property
    def expected_zero_after(self) -> float:
        """Stable window, plus whatever remains of the grace period behind the activator by then.

        An activator that only entered the path once the stable average hit zero (TBC >= 0) has
        served no part of the grace period yet, so the whole grace period follows the window.
        """
        idle_from = self.last_request + self.stable_window
        proxied_for = max(0.0, idle_from - self.proxied_since)
        return self.stable_window + max(0.0, self.grace_period - proxied_for)

    @property
    def latest_zero_after(self) -> float:
        """Plus the scale-down rate limit (at most halving per 2 s tick) and two ticks of rounding."""
        return self.expected_zero_after + 2 * self.ready_when_idle.bit_length() + 4


def dynamics(document: dict[str, Any], seed: int = 1) -> Dynamics:
    scenario = parse_scenario(document)
    sim = Simulation(scenario, seed).run()
    phases = document["workload"]
    idle, busy = phases[0]["duration"], phases[1]["duration"]
    rate, service = phases[1]["rate"], document["revision"]["service_time"]["value"]
    needed = math.ceil(rate * service / scenario.settings.spec.target_value)

    def first(predicate: Callable[[Any], bool], after: float) -> float | None:
        return next((row.second for row in sim.timeline if row.second >= after and predicate(row)), None)

    last = idle + busy
    idle_from = last + scenario.settings.stable_window
    serving = [row.second for row in sim.timeline if row.second <= idle_from and row.mode == "serve"]
    proxied_since = serving[-1] + 1 if serving else 0.0
    return Dynamics(
        needed_pods=needed,
        first_request=idle,
        desired_at=first(lambda r: r.desired_pods >= needed, idle),
        ready_at=first(lambda r: r.ready_pods >= needed, idle),
        last_request=last,
        zero_at=first(lambda r: r.replicas == 0, last),
        proxied_since=proxied_since,
        ready_when_idle=next((r.ready_pods for r in sim.timeline if r.second >= idle_from), 0),
        stable_window=scenario.settings.stable_window,
        grace_period=scenario.settings.scale_to_zero_grace_period,
        cold_start=document["revision"]["cold_start"]["value"],
    )


# -- the document --------------------------------------------------------------------------------------


def _ci(measured: tuple[float, float], digits: int = 4) -> str:
    mean, half = measured
    return f"{mean:.{digits}f} ± {half:.{digits}f}"


def _mark(theory: float, measured: tuple[float, float]) -> str:
    return "yes" if within(theory, measured) else f"no ({abs(measured[0] - theory) / theory:.1%} off)"


_LABELS = {
    "p_wait": "P(wait)",
    "p_block": "P(503)",
    "mean_wait": "mean wait (s)",
    "mean_response": "mean response (s)",
}


def _table(
    cases: list[Case], figures: tuple[str, ...], seeds: int, progress: Callable[[str], None]
) -> list[str]:
    """One row per case: for each figure the closed form, the simulated mean ± CI, and whether it fits."""
    header = "| case | " + " | ".join(f"{_LABELS[f]} theory | simulated | inside" for f in figures) + " |"
    rows = [header, "|---|" + "---|---|---|" * len(figures)]
    for case in cases:
        progress(case.title)
        measured = replicate(case, seeds)
        cells = []
        for name in figures:
            theory = getattr(case.theory, name)
            cells.append(f"{theory:.4f} | {_ci(measured[name])} | {_mark(theory, measured[name])}")
        rows.append(f"| {case.title} | " + " | ".join(cells) + " |")
    return rows


def render(seeds: int, duration: float, progress: Callable[[str], None] = print) -> str:
    cases = queueing_cases(duration)
    out: list[str] = [
        "# Simulator validation",
        "",
        "Generated by `python -m simulation.validation "
        f"--seeds {seeds} --duration {duration:g}` (do not edit by hand). Each row is {seeds} independent",
        f"replications of {duration:g} simulated seconds (the first 100 s are warm-up and left out); the",
        "simulated figure is the mean over replications ± the half-width of its 95 % confidence interval",
        '(Student t). "Inside" says whether the closed-form value lies inside that interval.',
        "",
        "The simulator runs the project's real `autoscaler` core (windows, KPA decision, bounds,",
        "scale-to-zero sequencing) and the real queue-proxy `Breaker` and `RequestStats`; the autoscaler is",
        "pinned here with `min-scale = max-scale = N`, exponential service times and Poisson arrivals.",
        "",
        "## Activator in the path (TBC = -1, cc = 1) vs pooled M/M/c (Erlang C)",
        "",
        "With target-burst-capacity -1 the activator is always in the path: it holds one FIFO queue for",
        "the revision and lets a request through only when a pod has a free slot (first-available for",
        "cc 1–3), so N pods with cc = 1 form an M/M/N queue.",
        "",
        *_table(cases["erlang_c"], ("p_wait", "mean_wait", "mean_response"), seeds, progress),
        "",
        "## Random routing (TBC = 0) vs N independent M/M/cc/K, K = 11·cc",
        "",
        "With target-burst-capacity 0 and ready pods the activator leaves the path; requests go to a pod",
        "chosen at random, whose queue-proxy breaker runs cc requests, queues 10·cc and answers 503",
        "beyond. Random splitting of a Poisson stream gives each pod Poisson(λ/N) arrivals.",
        "",
        *_table(cases["mmck"], ("p_block", "mean_wait", "mean_response"), seeds, progress),
        "",
        "## `service_model: shared` vs processor sharing",
        "",
        "One pod, no concurrency limit (cc = 0), c cores shared equally by the requests in service. The",
        "number in system is then the M/M/c birth–death chain, so the mean response time equals Erlang C's",
        "(though nobody waits: everyone is served, slower).",
        "",
        *_table(cases["shared"], ("mean_response",), seeds, progress),
        *_dynamics_section(progress),
    ]
    return "\n".join(out) + "\n"


DYNAMICS_CASES = (
    ("cc=1, TBC=-1 (activator always in path)", 1, -1, 20.0, 0.5, 3.0),
    ("cc=1, TBC=0 (activator out once pods are ready)", 1, 0, 20.0, 0.5, 3.0),
    ("cc=10, TBC=211 (Knative's default TBC)", 10, 211, 100.0, 0.2, 5.0),
    ("cc=0 (unlimited), TBC=211", 0, 211, 500.0, 0.5, 2.0),
)


def _dynamics_section(progress: Callable[[str], None]) -> list[str]:
    out = [
        "",
        "## Autoscaling dynamics",
        "",
        "A revision idles for 120 s (its initial pod scales away to zero), receives a constant stream",
        "that needs P = ⌈λ·S / TV⌉ pods (TV = target × 0.7) for 120 s, then idles again; Knative's",
        "defaults otherwise (stable window 60 s, panic window 6 s, panic threshold 200 %, grace period 30 s,",
        "max scale-down rate 2).",
        "",
        "What Knative's algorithm implies. *Up:* the activator reports the first request at once and the",
        "autoscaler decides immediately (poke); the next 1 s reports fill the (so far empty) panic window,",
        "so the decision tick at most 2 s later already sees the load: **desired ≥ P within 2 ticks (4 s)",
        "of the first request, ready ≥ P one cold start later**. Observed concurrency includes requests",
        "queued while pods start, so panic overshoots P, and panic never scales down until a stable window",
        "passes without crossing the threshold. *Down to zero:* the stable average reaches 0 one stable",
        "window after the last request (T). An Active revision then turns Inactive; Knative scales to zero",
        "at once if the activator has been in the path for the grace period already (TBC = -1, or a",
        "revision proxied anyway because its burst capacity is short), otherwise it puts the activator in",
        "the path and waits out the grace period: **zero no earlier than T + stable window (+ what is left",
        "of the grace period)**, and later by at most the scale-down rate limit (halving per 2 s tick from",
        "the pods still ready) plus two ticks of rounding.",
        "",
        "| case | P | desired ≥ P after (s) | ready ≥ P after (s) | bound: 4 s / 4 s + cold start "
        "| scale target 0 after last request (s) | expected range (s) |",
        "|---|---|---|---|---|---|---|",
    ]
    for title, cc, tbc, rate, service, cold in DYNAMICS_CASES:
        progress(f"dynamics: {title}")
        d = dynamics(step_scenario(cc, tbc, rate, service, cold))
        desired = d.desired_at - d.first_request if d.desired_at is not None else None
        ready = d.ready_at - d.first_request if d.ready_at is not None else None
        zero = d.zero_at - d.last_request if d.zero_at is not None else None
        expected = d.expected_zero_after
        out.append(
            f"| {title} | {d.needed_pods} | {desired} | {ready} | 4 / {4 + d.cold_start:g} "
            f"| {zero} | {expected:g} to {d.latest_zero_after:g} |"
        )
    out += [
        "",
        "Timelines for these runs come out of `kpa simulate` (e.g. `examples/scenarios/step.yaml`).",
    ]
    return out


# What follows this line in the output file was measured live (`kpa validate`), which this generator
# cannot rerun: a regeneration keeps it as it is.
KEPT_MARKER = "<!-- measured live, not generated: the generator keeps what follows -->"


def keep_measured(previous: str) -> str:
    """The measured-live tail of the previous file (from :data:`KEPT_MARKER` on), or ""."""
    at = previous.find(KEPT_MARKER)
    return "" if at < 0 else "\n" + previous[at:]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--duration", type=float, default=3000.0, help="simulated seconds per replication")
    parser.add_argument("--out", type=Path, default=Path("docs/simulation-validation.md"))
    args = parser.parse_args(argv)
    text = render(args.seeds, args.duration)
    previous = args.out.read_text() if args.out.exists() else ""
    args.out.write_text(text + keep_measured(previous))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
