"""The simulation: one revision's whole KPA path under simpy's clock.

What runs here is plumbing and timing; every decision comes from the real code:

* ``autoscaler.revision.RevisionAutoscaler`` — windows, the KPA decision, bounds, scale-to-zero
  sequencing and the serve/proxy mode — fed through its public API: a 1 s scrape of the ready pods
  (Knative's sample size, old pods first, extrapolated to the revision) and the activator's pushed
  stats, deciding and reconciling when ``autoscaler.schedule.DecisionSchedule`` says (the 2 s tick,
  the poke of a pushed stat, the reconciler's requeue), as the live service does;
* ``queueproxy.breaker.Breaker`` and ``queueproxy.stats.RequestStats`` in every pod and in the
  activator.

Events are ``simpy`` events with callbacks — one for each arrival and one for each service
completion, recycled rather than built anew (:mod:`simulation.recycled`) — rather than a process per
request, which keeps a simulated request at a few microseconds of wall time.

Memory does not grow with the duration: timeline rows go to a sink one simulated second at a time
(the command line streams them to timeline.csv), per-second counts live in a ring of four seconds,
latencies in a bounded :class:`~simulation.sample.Sample`, and a pod that is gone leaves only its
four times behind (the pods: :mod:`simulation.fleet`). What a run may cost is bounded up front by
:mod:`simulation.limits`.
"""

from __future__ import annotations

import itertools
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import simpy

from autoscaler import collection
from autoscaler.policy_loader import make_autoscaler
from autoscaler.revision import ScaleDecision
from autoscaler.schedule import DecisionSchedule
from autoscaler.stat import Stat
from simulation import limits
from simulation.activator import REPORT_INTERVAL as ACTIVATOR_REPORT_INTERVAL
from simulation.activator import SimulatedActivator
from simulation.fleet import Fleet
from simulation.models import ModelsRun
from simulation.pods import REPORT_INTERVAL, Pod, Request
from simulation.recycled import Callbacks, Recycled, Recycler
from simulation.sample import Sample
from simulation.scenario import ACTIVATOR_REPORT_PHASE as ACTIVATOR_REPORT_PHASE  # simulation.many's
from simulation.scenario import Scenario

CONTROL_INTERVAL = 1.0  # Knative's scrape period; timeline rows are taken (and decisions made) on these ticks

COMPLETED, REJECTED, TIMED_OUT = "completed", "rejected", "timed_out"
_RING = 4  # seconds of per-second counts kept: a second's row is complete one second after it starts


@dataclass
class Counters:
    """Requests that arrived after the warm-up, by outcome, plus their latencies."""

    requests: int = 0
    completed: int = 0
    rejected: int = 0
    timed_out: int = 0
    cold: int = 0
    latencies: Sample = field(default_factory=Sample)
    waits: Sample = field(default_factory=Sample)


@dataclass(slots=True)
class TimelineRow:
    """The revision's state at the start of one simulated second, and the requests of that second."""

    second: int
    desired_pods: int
    replicas: int
    ready_pods: int
    starting_pods: int
    draining_pods: int
    mode: str
    panicking: bool
    stable_concurrency: float
    panic_concurrency: float
    excess_burst_capacity: float
    activator_waiting: int
    in_flight: int
    arrivals: int = 0
    completions: int = 0
    rejections: int = 0
    timeouts: int = 0


TimelineSink = Callable[[TimelineRow], None]


def random_streams(seed: int) -> list[np.random.SeedSequence]:
    """Independent streams for arrivals, service times, start-up times, routing, and (multi-model
    revisions) model picks and load times, in that order.

    Separate streams mean changing one knob does not reshuffle the others (common random numbers); a
    stream's numbers do not depend on how many streams there are.
    """
    return np.random.SeedSequence(seed).spawn(6)


class Simulation:
    """Build once per run: ``Simulation(scenario, seed).run()``.

    Each timeline row goes to ``timeline`` (a callable) once its second is over; without one the rows
    are kept in :attr:`timeline`, which grows with the duration (fine for the short runs of tests and
    ``kpa validate``; ``kpa simulate`` streams them to its CSV).
    """

    def __init__(
        self,
        scenario: Scenario,
        seed: int | None = None,
        timeline: TimelineSink | None = None,
        env: simpy.Environment | None = None,
    ) -> None:
        """``env``: a clock shared with other revisions (:mod:`simulation.many` drives them); default own."""
        self.scenario = scenario
        self.seed = scenario.seed if seed is None else seed
        self.settings = scenario.settings
        self.env = simpy.Environment() if env is None else env
        streams = random_streams(self.seed)
        revision = scenario.revision
        # Arrival times one by one, drawn block by block as the run reaches them.
        self._arrival_times = itertools.chain.from_iterable(
            block.tolist() for block in scenario.workload.arrivals(np.random.default_rng(streams[0]))
        )
        self.timers = Recycler(self.env)  # the arrivals and the pods' service completions
        self._arrival = Recycled(self.env)  # one arrival pending at a time: one event, fired again
        self._again = self.timers.again
        self._on_arrival_callbacks: Callbacks = [self._on_arrival]
        self.service_time = revision.service_time.sampler(np.random.default_rng(streams[1]))
        self.models = None if revision.models is None else ModelsRun(revision.models, streams[4], streams[5])
        self.rng = random.Random(int(streams[3].generate_state(1)[0]))
        self._random = self.rng.random

        self.duration = scenario.duration
        self.warmup = scenario.warmup
        self._timeout = revision.timeout
        self._seconds = math.ceil(self.duration)
        # Counts by second modulo _RING; a second's slot is read and cleared when its row is emitted.
        self._arrivals = [0] * _RING
        self._completions = [0] * _RING
        self._rejections = [0] * _RING
        self._timeouts = [0] * _RING
        self._row: TimelineRow | None = None  # the current second's row, emitted when the second is over
        self.timeline: list[TimelineRow] = []
        self._emit = self.timeline.append if timeline is None else timeline
        self.arrivals = 0  # every arrival, warm-up included
        self.counters = Counters()
        self.outstanding = 0
        self._max_outstanding = limits.MAX_IN_FLIGHT

        self.fleet = Fleet(self, revision.cold_start.sampler(np.random.default_rng(streams[2])))
        self.ready = self.fleet.ready  # the pods requests are routed to: the fleet's list, changed in place
        self._round_robin = revision.routing == "round_robin"
        self._next_pod = 0
        self._serve = False  # activator out of the path
        self.activator = SimulatedActivator(self, scenario.platform.activator_queue_depth, self.rng)
        # The autoscaler's clock: simulated time shifted into its metric buckets (platform.bucket_phase).
        self._phase = scenario.platform.bucket_phase
        self.autoscaler = make_autoscaler(self.settings, self._phase, ready_pods=0)  # KPA or settings.policy
        self._decisions = DecisionSchedule(0.0)  # its 2 s ticks fall on the control ticks
        self.decision: ScaleDecision | None = None
        self.wall_seconds = 0.0
        self.drain_seconds = 0.0

    # -- setup ----------------------------------------------------------------------------------------

    def _start(self) -> None:
        initial = self.settings.initial_scale
        self.fleet.set_replicas(initial, 0.0)
        self._every(CONTROL_INTERVAL, 0.0, self._control_tick)
        report_phase = self.scenario.platform.activator_report_phase
        self._every(ACTIVATOR_REPORT_INTERVAL, report_phase, self._activator_tick)
        self._schedule_next_arrival(0.0)

    def _every(self, period: float, first: float, action: Callable[[float], None]) -> None:
        def fire(event: simpy.Event) -> None:
            action(self.env.now)
            again = self.env.timeout(period)
            again.callbacks.append(fire)

        event = self.env.timeout(first)
        event.callbacks.append(fire)

    # -- arrivals -------------------------------------------------------------------------------------

    def _schedule_next_arrival(self, now: float) -> None:
        at = next(self._arrival_times, math.inf)
        if at < self.duration:
            self._again(self._arrival, at - now, self._on_arrival_callbacks)

    def _on_arrival(self, event: Recycled) -> None:
        now = event.at
        request = Request(now, now + self._timeout, self.service_time())
        if self.models is not None:
            request.model = self.models.pick()
        self.outstanding += 1
        if self.outstanding > self._max_outstanding:
            raise limits.too_many_in_flight(self.outstanding, now)
        self._arrivals[int(now) % _RING] += 1
        ready = self.ready
        if self._serve and ready:
            if self._round_robin:
                i = self._next_pod % len(ready)
                self._next_pod = i + 1
            else:
                i = int(self._random() * len(ready))
            if not ready[i].accept(request, now):
                self.rejected(request, now)
        else:
            self.activator.accept(request, now)
        if now >= self.warmup:
            counters = self.counters
            counters.requests += 1
            if request.cold:
                counters.cold += 1
        self._schedule_next_arrival(now)

    def counts(self, request: Request) -> bool:
        """Whether ``request`` counts in the report: it arrived after the warm-up."""
        return request.arrival >= self.warmup

    def watch_deadline(self, request: Request, expire: Callable[[Request], None]) -> None:
        """Call ``expire(request)`` at its deadline; the callee ignores it if the request moved on."""
        event = self.env.timeout(max(request.deadline - self.env.now, 0.0))
        event.callbacks.append(lambda _event: expire(request))

    # -- outcomes -------------------------------------------------------------------------------------

    def _settle(self, request: Request, outcome: str, now: float, per_second: list[int]) -> bool:
        """Book the request's outcome; True when it counts in the report (arrived after the warm-up)."""
        request.outcome = outcome
        if request.proxied:
            self.activator.finished(request, now)
        self.outstanding -= 1
        second = int(now)
        if second < self._seconds:
            per_second[second % _RING] += 1
        return request.arrival >= self.warmup

    def completed(self, request: Request, now: float) -> None:
        if self._settle(request, COMPLETED, now, self._completions):
            counters = self.counters
            counters.completed += 1
            counters.latencies.append(now - request.arrival)
            counters.waits.append(request.start - request.arrival)
            if counters.completed >= counters.latencies.next_check:
                counters.latencies.fold_due()
                counters.waits.fold_due()

    def rejected(self, request: Request, now: float) -> None:
        if self._settle(request, REJECTED, now, self._rejections):
            self.counters.rejected += 1

    def timed_out(self, request: Request, now: float) -> None:
        if self._settle(request, TIMED_OUT, now, self._timeouts):
            self.counters.timed_out += 1

    # -- autoscaler -----------------------------------------------------------------------------------

    def push_stat(self, stat: Stat, now: float) -> None:
        """A stat pushed by the activator: recorded at once; it may poke an immediate decision."""
        if self.autoscaler.record(stat, now + self._phase):
            self._decide(now)

    def _activator_tick(self, now: float) -> None:
        stat = self.activator.report(now)
        if stat is not None:
            self.push_stat(stat, now)

    def _control_tick(self, now: float) -> None:
        tick = round(now / CONTROL_INTERVAL)
        # Knative's decider and scraper tick in step (both start with the revision's Metric); deciding
        # first means the decider never reads this tick's scrape (at bucket_phase 0, only whole seconds).
        self._end_second()  # every event of the second before this tick has fired
        if self._decisions.tick_due(now):
            self._decide(now)
        if tick >= 1 and self.settings.has_scrape_target:
            self._scrape(now)
        if tick < self._seconds:
            self._row = self._snapshot(tick)

    def _scrape(self, now: float) -> None:
        """Knative's pod scrape: sample some ready pods (older ones first) and extrapolate to all."""
        ready = self.ready
        if not ready:
            return
        by_name = {pod.name: pod for pod in ready}
        infos = [collection.ScrapePod(pod.name, pod.created) for pod in ready]
        order = collection.scrape_order(infos, self.settings.stable_window, now, self.rng)
        stats = [self._pod_stat(by_name[name], now) for name in order[: collection.sample_size(len(ready))]]
        # The scraper records without poking: only pushed stats wake the decider early.
        stat = collection.extrapolate(stats, len(ready)).with_timestamp(now)
        self.autoscaler.record(stat, now + self._phase)

    @staticmethod
    def _pod_stat(pod: Pod, now: float) -> Stat:
        report = pod.report
        if report is None:
            return Stat(pod_name=pod.name, timestamp=now)  # before its first report: an empty stat
        return Stat(
            pod_name=pod.name,
            average_concurrent_requests=report.average_concurrency,
            average_proxied_concurrent_requests=report.average_proxied_concurrency,
            request_count=report.request_count / REPORT_INTERVAL,
            proxied_request_count=report.proxied_request_count / REPORT_INTERVAL,
            process_uptime=now - pod.uptime_origin,
            timestamp=now,
        )

    def _decide(self, now: float, scale: bool = True) -> None:
        """The decider on a tick or a poke; ``scale=False`` re-applies the last decision (a requeue)."""
        ready, in_path = len(self.ready), not self._serve
        decision = (
            self.autoscaler.decide(now + self._phase, ready, activator_in_path=in_path)
            if scale
            else self.autoscaler.reconcile(now + self._phase, ready, activator_in_path=in_path)
        )
        self.decision = decision
        after = decision.requeue_after
        if after is not None and self._decisions.requeue(now, after):
            self.env.timeout(after).callbacks.append(self._on_requeue)
        delay = self.scenario.platform.actuation_delay
        serve = decision.mode == "serve"
        desired = decision.desired_pods if decision.apply else None
        if delay > 0:
            event = self.env.timeout(delay)
            event.callbacks.append(lambda _event: self._actuate(desired, serve, self.env.now))
        else:
            self._actuate(desired, serve, now)

    def _on_requeue(self, event: simpy.Event) -> None:
        """Knative's reconciler re-queued itself (grace periods, probes): reconcile if still the one due."""
        now = self.env.now
        if self._decisions.requeue_due(now):
            self._decide(now, scale=False)

    def _actuate(self, desired: int | None, serve: bool, now: float) -> None:
        self._serve = serve
        if desired is not None:
            self.fleet.set_replicas(desired, now)

    # -- timeline -------------------------------------------------------------------------------------

    def _snapshot(self, second: int) -> TimelineRow:
        decision = self.decision
        fleet = self.fleet
        return TimelineRow(
            second=second,
            desired_pods=decision.desired_pods if decision is not None else fleet.replicas,
            replicas=fleet.replicas,
            ready_pods=len(self.ready),
            starting_pods=len(fleet.starting),
            draining_pods=len(fleet.draining),
            mode="serve" if self._serve and self.ready else "proxy",
            panicking=bool(decision.panicking) if decision is not None else False,
            stable_concurrency=decision.stable if decision is not None else 0.0,
            panic_concurrency=decision.panic if decision is not None else 0.0,
            excess_burst_capacity=decision.excess_burst_capacity if decision is not None else 0.0,
            activator_waiting=self.activator.waiting,
            in_flight=self.outstanding,
        )

    def _end_second(self) -> None:
        """The current second is over: add its counts to its row and hand the row on."""
        row = self._row
        if row is None:
            return
        self._row = None
        slot = row.second % _RING
        for name, counts in (
            ("arrivals", self._arrivals),
            ("completions", self._completions),
            ("rejections", self._rejections),
            ("timeouts", self._timeouts),
        ):
            setattr(row, name, counts[slot])
            counts[slot] = 0
        self.arrivals += row.arrivals
        self._emit(row)

    # -- running --------------------------------------------------------------------------------------

    def run(self, progress: Callable[[float], None] | None = None) -> Simulation:
        """Simulate ``duration`` seconds, then let requests still in flight finish (no new arrivals)."""
        started = time.perf_counter()
        self._simulate(progress)
        self.wall_seconds = time.perf_counter() - started
        return self

    def _simulate(self, progress: Callable[[float], None] | None) -> None:
        self._start()
        step = max(1.0, self.duration / 200)
        now = 0.0
        while now < self.duration:
            now = min(now + step, self.duration)
            self.env.run(until=now)
            if progress is not None:
                progress(now)
        while self.outstanding > 0:
            self.env.run(until=self.env.now + 1.0)
        self._end_second()  # the last second, if the drain ended before its tick
        self.drain_seconds = self.env.now - self.duration
