"""What one simulation may cost, and the clear refusal of what it cannot afford.

A scenario is a few lines of YAML; what it asks for is not bounded by its size. ``duration: 1e9``
is a timeline row and a control tick for each of a billion seconds (days of wall time, and a
timeline.csv of tens of gigabytes); ``rate: 1e7`` over an hour is 3.6e10 requests. The simulator's
memory does not grow with either (rows are streamed, latencies kept in a bounded sample), but a run
that cannot finish in reasonable time is refused up front, naming the key and the fix, rather than
left to run for hours. The figures below are for ~100,000 simulated requests and ~100,000 simulated
seconds per wall second (docs/simulation.md, "Limits").
"""

from __future__ import annotations

from simulation.schema import Node, ScenarioError, join, show
from simulation.workloads import Workload
from simulation.yamldoc import Position

MAX_SIMULATED_SECONDS = 10_000_000  # duration + timeout: ~116 days, a ~0.7 GB timeline.csv, minutes of ticks
MAX_REQUESTS = 100_000_000  # arrivals (thinning candidates for varying rates) of one run: ~15-30 min
MAX_PODS = 10_000  # pods of one revision at a time: each is simulated, reported and scraped every second
MAX_IN_FLIGHT = 2_000_000  # requests queued or in service at once: ~0.5 KB each, ~1 GB in all
MAX_SWEEP_CELLS = 10_000  # grid cells of one `kpa sweep`
MAX_SCENARIO_BYTES = 1 << 20  # a scenario file (data files have their own limit)


def check_seconds(root: Node, duration: float, timeout: float) -> None:
    """Refuse a run whose simulated span (duration, then up to ``timeout`` to drain) is above the cap."""
    if duration > MAX_SIMULATED_SECONDS:
        raise root.error(
            "duration",
            f"above the {MAX_SIMULATED_SECONDS:,}-second limit of one simulation (a timeline row and "
            "a control tick per simulated second); shorten duration",
        )
    if duration + timeout > MAX_SIMULATED_SECONDS:
        revision = root.child("revision")
        raise ScenarioError(
            f"revision.timeout={show(timeout)}: duration + timeout (requests still in flight may run that "
            f"long) is above the {MAX_SIMULATED_SECONDS:,}-second limit of one simulation; lower "
            "revision.timeout or shorten duration",
            revision.position("timeout"),
        )


def check_requests(root: Node, workload: Workload, duration: float) -> None:
    """Refuse a workload whose arrivals (or thinning candidates) before ``duration`` are above the cap.

    Counted before anything is drawn: the expected number for each phase (rate × duration for a
    constant rate; peak rate × duration for the rates drawn by thinning, which is the work done).
    """
    draws = workload.draws(duration)
    total = sum(draws)
    if total <= MAX_REQUESTS:
        return
    phases = root.items("workload")
    biggest = max(range(len(draws)), key=draws.__getitem__)
    path, item, at = phases[biggest]
    node = Node.of(item, path, at)
    key = next((k for k in ("rate", "to", "mean", "scale", "duration") if node.has(k)), None)
    what = path if key is None else f"{join(path, key)}={show(node.raw(key))}"
    if key not in (None, "duration") and node.has("duration"):
        what += f" x duration={show(node.raw('duration'))}"
    share = "" if len(draws) == 1 else f" (all phases: ≈ {total:.3g})"
    raise ScenarioError(
        f"{what} ≈ {draws[biggest]:.3g} requests{share}: above the {MAX_REQUESTS:,}-request limit of one "
        "simulation; shorten duration or lower the rate",
        node.position(key) if key is not None else at,
    )


def too_many_in_flight(count: int, now: float) -> ScenarioError:
    """The error for more than :data:`MAX_IN_FLIGHT` requests in the system at once."""
    return ScenarioError(
        f"at {now:g} s {count:,} requests were queued or in service: above the {MAX_IN_FLIGHT:,}-request "
        "limit of one simulation (~0.5 KB each); lower the rate, or bound them with container_concurrency, "
        "autoscaling.knative.dev/max-scale or a shorter revision.timeout"
    )


def check_pods(what: str, pods: int, fix: str, at: Position | None = None) -> None:
    """Refuse more than :data:`MAX_PODS` pods (a scale bound up front, or a decision during the run)."""
    if pods > MAX_PODS:
        raise ScenarioError(
            f"{what}: {pods:,} pods, above the {MAX_PODS:,}-pod limit of one simulation; {fix}", at
        )
