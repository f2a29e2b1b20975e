"""Many revisions under one clock: each its own :class:`~simulation.engine.Simulation`, optionally on
shared nodes, with one control tick for all of them and idle revisions skipped.

Every revision runs the whole one-revision model unchanged — its arrivals, pods, queue-proxy
breakers, activator, scrape and KPA decisions — on a simpy environment shared with the others. What
this module adds:

* **one tick for all**: a single 1 s control event runs each awake revision's tick (end of second,
  decision, scrape, timeline row) in revision order, and a single half-second-off event its
  activator report, instead of two events per revision per second;
* **shared nodes** (optional): pods ask :class:`~simulation.cluster.Cluster` for room; a pod that
  does not fit waits pending, its cold start beginning only once it is placed (``Placement``);
* **idle revisions sleep**: a revision with no pod, nothing in flight, an untracked activator and an
  autoscaler :meth:`~autoscaler.revision.RevisionAutoscaler.at_rest` would, tick after tick, record
  nothing, decide the same (changing no state) and scale nothing — so its ticks are skipped until the
  tick before its next arrival (known in advance: arrivals are drawn ahead). On waking, its decision
  schedule is brought to where the skipped ticks would have left it. A sleeping revision's timeline
  rows would all be zero pods and zero requests; the totals simply leave them out. ``skip_idle=False``
  runs every tick, and tests/unit/test_simulation_many.py checks both give identical reports.

The totals timeline (one :class:`TotalRow` per simulated second, summed over revisions) goes to a
sink as the single-revision timeline does; per-revision rows are not kept (200 revisions × a day
would be 17 million rows).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING

import numpy as np
import simpy

from simulation import limits
from simulation.activator import REPORT_INTERVAL as ACTIVATOR_REPORT_INTERVAL
from simulation.cluster import Cluster, Resources
from simulation.engine import ACTIVATOR_REPORT_PHASE, CONTROL_INTERVAL, Simulation, TimelineRow

if TYPE_CHECKING:
    from simulation.many_scenario import ManyScenario
    from simulation.pods import Pod


@dataclass(slots=True)
class TotalRow:
    """All revisions at the start of one simulated second, and the requests of that second."""

    second: int
    desired_pods: int = 0
    replicas: int = 0
    ready_pods: int = 0
    starting_pods: int = 0  # pending ones included
    pending_pods: int = 0  # waiting for room on a node
    draining_pods: int = 0
    activator_waiting: int = 0
    in_flight: int = 0
    arrivals: int = 0
    completions: int = 0
    rejections: int = 0
    timeouts: int = 0
    awake_revisions: int = 0  # revisions ticked this second (the rest were idle: no pods, no traffic)


TOTAL_COLUMNS = [f.name for f in fields(TotalRow)]
TotalSink = Callable[[TotalRow], None]


def revision_seed(seed: int, index: int) -> int:
    """Each revision's own seed: independent streams, the same whatever the other revisions are."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0])


@dataclass
class PendingFigures:
    """Pods of one revision that waited for room on a node: how many, the pod-seconds they spent
    pending within the report's window (warm-up to duration, as ``pod_seconds``), the longest wait."""

    window: tuple[float, float]
    pods: int = 0
    seconds: float = 0.0
    max_wait: float = 0.0

    def add(self, since: float, until: float) -> None:
        lo, hi = self.window
        self.pods += 1
        self.seconds += max(0.0, min(until, hi) - max(since, lo))
        self.max_wait = max(self.max_wait, until - since)


class SharedNodes:
    """The cluster shell: which pod waits with which start, and whom to tell when room frees."""

    def __init__(self, env: simpy.Environment, nodes: list[Resources]) -> None:
        self.env = env
        self.cluster: Cluster[Pod] = Cluster(nodes)
        self._waiting: dict[Pod, tuple[Placement, Callable[[], None], float]] = {}

    def request(self, owner: Placement, pod: Pod, start: Callable[[], None]) -> None:
        if self.cluster.submit(pod, owner.requests):
            start()
        else:
            self._waiting[pod] = (owner, start, self.env.now)

    def release(self, pod: Pod) -> None:
        now = self.env.now
        waited = self._waiting.pop(pod, None)
        if waited is not None:  # scaled away while pending
            waited[0].pending.add(waited[2], now)
        for placed in self.cluster.remove(pod):
            owner, start, since = self._waiting.pop(placed)
            owner.pending.add(since, now)
            start()

    def settle(self, now: float) -> None:
        """The run is over: count the pods still pending, with their wait so far."""
        for owner, _, since in self._waiting.values():
            owner.pending.add(since, now)
        self._waiting.clear()


class Placement:
    """One revision's view of the shared nodes (the fleet's ``placement``): its pods' requests."""

    def __init__(self, nodes: SharedNodes, requests: Resources, window: tuple[float, float]) -> None:
        self._nodes = nodes
        self.requests = requests
        self.pending = PendingFigures(window)

    def request(self, pod: Pod, start: Callable[[], None]) -> None:
        self._nodes.request(self, pod, start)

    def release(self, pod: Pod) -> None:
        self._nodes.release(pod)


class ManySimulation:
    """Build once per run: ``ManySimulation(scenario, seed).run()``; ``revisions`` are the per-revision
    :class:`Simulation` objects (their counters and fleets hold each revision's figures)."""

    def __init__(
        self,
        scenario: ManyScenario,
        seed: int | None = None,
        timeline: TotalSink | None = None,
        *,
        skip_idle: bool = True,
    ) -> None:
        self.scenario = scenario
        self.seed = scenario.seed if seed is None else seed
        self.env = simpy.Environment()
        self.duration = scenario.duration
        self._seconds = math.ceil(self.duration)
        self.skip_idle = skip_idle
        self.timeline: list[TotalRow] = []
        self._emit = self.timeline.append if timeline is None else timeline
        self._totals: dict[int, TotalRow] = {}
        self.nodes = None if scenario.nodes is None else SharedNodes(self.env, list(scenario.nodes))
        self.revisions: list[Simulation] = []
        self.placements: list[Placement | None] = []
        for index, revision in enumerate(scenario.revisions):
            sim = Simulation(
                revision.scenario, revision_seed(self.seed, index), timeline=self._add_row, env=self.env
            )
            placement = None
            if self.nodes is not None:
                placement = Placement(self.nodes, revision.requests, (scenario.warmup, scenario.duration))
                sim.fleet.placement = placement
            self.revisions.append(sim)
            self.placements.append(placement)
        self._awake: list[int] = list(range(len(self.revisions)))  # revision indexes, ascending
        self._wakes: dict[int, list[int]] = {}  # tick -> revisions to wake for it
        self.revision_ticks = 0  # revision-seconds ticked (the work the idle skip saves)
        self.wall_seconds = 0.0
        self.drain_seconds = 0.0

    @property
    def arrivals(self) -> int:
        return sum(sim.arrivals for sim in self.revisions)

    # -- ticks ----------------------------------------------------------------------------------------

    def _every(self, period: float, first: float, action: Callable[[float], None]) -> None:
        def fire(_event: simpy.Event) -> None:
            action(self.env.now)
            self.env.timeout(period).callbacks.append(fire)

        self.env.timeout(first).callbacks.append(fire)

    def _control_tick(self, now: float) -> None:
        tick = round(now / CONTROL_INTERVAL)
        woken = self._wakes.pop(tick, None)
        if woken:
            for index in woken:
                # Where the skipped ticks up to the last second would have left its 2 s decision grid.
                self.revisions[index]._decisions.tick_due(now - CONTROL_INTERVAL)
            self._awake = sorted(self._awake + woken)
        if tick < self._seconds:
            self._totals[tick] = TotalRow(tick, pending_pods=self.nodes.cluster.pending if self.nodes else 0)
        still: list[int] = []
        revisions = self.revisions
        in_flight = 0
        for index in self._awake:
            sim = revisions[index]
            sim._control_tick(now)
            in_flight += sim.outstanding
            wake = self._sleep_until(sim, tick) if self.skip_idle else None
            if wake is None:
                still.append(index)
            else:
                sim._row = None  # this second's row: zero pods, and no request before the wake
                if wake < math.inf:
                    self._wakes.setdefault(int(wake), []).append(index)
        if in_flight > limits.MAX_IN_FLIGHT:  # each revision checks its own; this bounds them together
            raise limits.too_many_in_flight(in_flight, now)
        self.revision_ticks += len(self._awake)
        row = self._totals.get(tick)
        if row is not None:
            row.awake_revisions = len(self._awake)
        self._awake = still
        self._flush(tick - 1)

    def _activator_tick(self, now: float) -> None:
        revisions = self.revisions
        for index in self._awake:
            revisions[index]._activator_tick(now)

    def _sleep_until(self, sim: Simulation, tick: int) -> float | None:
        """The tick to wake ``sim`` at (inf: never), when it is idle and its next arrival is at least two
        ticks away; else None (keep ticking)."""
        fleet = sim.fleet
        if fleet.replicas or fleet.starting or fleet.ready or fleet.draining or sim.outstanding or sim._serve:
            return None
        if sim.activator._tracked or sim.activator.waiting or sim.scenario.platform.actuation_delay:
            return None
        at_rest = getattr(sim.autoscaler, "at_rest", None)  # the KPA's; another policy never sleeps
        if at_rest is None or not at_rest(float(tick)):
            return None
        pending = sim._arrival  # the revision's one arrival event: pending while it has callbacks
        arrival = pending.at if pending.callbacks else math.inf
        wake = math.ceil(arrival) - 1 if arrival < math.inf else math.inf  # the last tick before it
        return wake if wake >= tick + 2 else None

    # -- totals ---------------------------------------------------------------------------------------

    def _add_row(self, row: TimelineRow) -> None:
        total = self._totals.get(row.second)
        if total is None:
            return
        total.desired_pods += max(row.desired_pods, 0)
        total.replicas += row.replicas
        total.ready_pods += row.ready_pods
        total.starting_pods += row.starting_pods
        total.draining_pods += row.draining_pods
        total.activator_waiting += row.activator_waiting
        total.in_flight += row.in_flight
        total.arrivals += row.arrivals
        total.completions += row.completions
        total.rejections += row.rejections
        total.timeouts += row.timeouts

    def _flush(self, second: int) -> None:
        row = self._totals.pop(second, None)
        if row is not None:
            self._emit(row)

    # -- running --------------------------------------------------------------------------------------

    def run(self, progress: Callable[[float], None] | None = None) -> ManySimulation:
        """Simulate ``duration`` seconds, then let requests still in flight finish (no new arrivals)."""
        started = time.perf_counter()
        for sim in self.revisions:  # what Simulation._start does, with the ticks shared
            sim.fleet.set_replicas(sim.settings.initial_scale, 0.0)
        self._every(CONTROL_INTERVAL, 0.0, self._control_tick)
        self._every(ACTIVATOR_REPORT_INTERVAL, ACTIVATOR_REPORT_PHASE, self._activator_tick)
        for sim in self.revisions:
            sim._schedule_next_arrival(0.0)
        step = max(1.0, self.duration / 200)
        now = 0.0
        while now < self.duration:
            now = min(now + step, self.duration)
            self.env.run(until=now)
            if progress is not None:
                progress(now)
        while any(sim.outstanding for sim in self.revisions):
            self.env.run(until=self.env.now + 1.0)
        for sim in self.revisions:
            sim._end_second()
        for second in sorted(self._totals):
            self._flush(second)
        self.drain_seconds = self.env.now - self.duration
        if self.nodes is not None:
            self.nodes.settle(self.env.now)
        self.wall_seconds = time.perf_counter() - started
        for sim in self.revisions:
            sim.wall_seconds = self.wall_seconds
            sim.drain_seconds = self.drain_seconds
        return self
