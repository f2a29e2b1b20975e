"""A revision's pods under simulated time: start-up, the queue-proxy in front, service, drain.

Each pod runs the real queue-proxy pieces — :class:`queueproxy.breaker.Breaker` (cc executing,
10·cc queued, 503 beyond) and :class:`queueproxy.stats.RequestStats` (Knative's time-weighted
averages) — and a service model behind them:

* ``parallel``: every admitted request is served on its own, for its drawn service time;
* ``shared``: processor sharing of ``cores`` among the requests in service (CPU-bound predictors).

For speed there is no simpy process per request: a completion is one timed simpy event whose
callback finishes the request, and a fired event is scheduled again for a later request rather than
built anew (:mod:`simulation.recycled`). Processor sharing keeps one pending wake-up per pod and virtual
time (work done per request so far), so an arrival costs a heap push rather than rescheduling every
request in service.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable
from typing import TYPE_CHECKING

from queueproxy.breaker import Admission, Breaker
from queueproxy.stats import RequestStats, StatsReport
from simulation.models import PodModels

if TYPE_CHECKING:
    from typing import Protocol

    import simpy

    from activator.throttler import Grant
    from simulation.models import ModelsRun
    from simulation.recycled import Callbacks, Recycled, Recycler
    from simulation.scenario import Scenario

    class PodFleet(Protocol):
        def pod_gone(self, pod: Pod, now: float) -> None: ...

    class PodHost(Protocol):
        """What a pod needs of the simulation it runs in: a Protocol, so pods never import the engine."""

        @property
        def env(self) -> simpy.Environment: ...
        @property
        def scenario(self) -> Scenario: ...
        @property
        def timers(self) -> Recycler: ...
        @property
        def fleet(self) -> PodFleet: ...
        @property
        def models(self) -> ModelsRun | None: ...
        def counts(self, request: Request) -> bool: ...
        def watch_deadline(self, request: Request, expire: Callable[[Request], None]) -> None: ...
        def completed(self, request: Request, now: float) -> None: ...
        def timed_out(self, request: Request, now: float) -> None: ...


STARTING, READY, DRAINING, GONE = "starting", "ready", "draining", "gone"
REPORT_INTERVAL = 1.0  # the queue-proxy cuts a stats report every second
_ADMITTED, _QUEUED = Admission.ADMITTED, Admission.QUEUED
_EPSILON = 1e-9


class Request:
    """One request's journey; times are simulated seconds."""

    __slots__ = (
        "arrival",
        "cold",
        "deadline",
        "grant",
        "model",
        "outcome",
        "pod",
        "proxied",
        "start",
        "work",
    )

    def __init__(self, arrival: float, deadline: float, work: float) -> None:
        self.arrival = arrival
        self.deadline = deadline
        # Its service time, drawn when it arrives: the n-th arrival gets the n-th draw whatever happens to
        # the others, so two policies run on one seed serve each request for the same time.
        self.work = work
        self.start = -1.0  # service start; -1 while waiting
        self.pod: Pod | None = None
        self.proxied = False  # came through the activator (K-Proxy-Request)
        self.cold = False  # waited for a pod to start
        self.grant: Grant[Request] | None = None  # the activator's throttler slot it holds
        self.outcome: str | None = None
        self.model = 0  # which model it asks for, on a multi-model revision (simulation.models)


class ParallelService:
    """Each admitted request runs alone for its service time (or until its deadline)."""

    def __init__(self, pod: Pod) -> None:
        timers = pod.sim.timers
        self._fire = timers.fire
        self._release = timers.release
        self._finished = pod.finished
        self._expired = pod.expired
        self._on_finish_callbacks: Callbacks = [self._on_finish]  # shared by all firings: simpy only reads it
        self._on_expire_callbacks: Callbacks = [self._on_expire]

    def start(self, request: Request, now: float) -> None:
        request.start = now
        work = request.work
        left = request.deadline - now
        if work < left:
            self._fire(work, self._on_finish_callbacks, request)
        else:
            self._fire(max(left, 0.0), self._on_expire_callbacks, request)

    def _on_finish(self, event: Recycled) -> None:
        self._release(event)  # its request and time are read before a waiter started next reuses it
        self._finished(event.payload, event.at)

    def _on_expire(self, event: Recycled) -> None:
        self._release(event)
        self._expired(event.payload, event.at)


class SharedService:
    """Processor sharing: with n requests in service on c cores each advances at min(1, c/n)."""

    def __init__(self, pod: Pod, cores: float, max_in_service: int) -> None:
        self._pod = pod
        self._env = pod.sim.env
        self._cores = cores
        # With a concurrency limit a request is slowed by at most this factor; below it no deadline can hit.
        self._max_slowdown = max(1.0, max_in_service / cores) if max_in_service > 0 else float("inf")
        self._jobs: list[tuple[float, int, Request]] = []  # (virtual finish, seq, request)
        self._deadlines: list[tuple[float, int, Request]] = []
        self._seq = itertools.count()
        self._virtual = 0.0
        self._last = 0.0
        self._wakeup: simpy.Timeout | None = None
        self._wakeup_at = float("inf")

    @property
    def busy(self) -> int:
        return len(self._jobs)

    def _advance(self, now: float) -> None:
        n = len(self._jobs)
        if n:
            self._virtual += (now - self._last) * (self._cores / n if n > self._cores else 1.0)
        self._last = now

    def start(self, request: Request, now: float) -> None:
        self._advance(now)
        request.start = now
        work = request.work
        seq = next(self._seq)
        heapq.heappush(self._jobs, (self._virtual + work, seq, request))
        if now + work * self._max_slowdown >= request.deadline:
            heapq.heappush(self._deadlines, (request.deadline, seq, request))
        self._schedule(now)

    def _schedule(self, now: float) -> None:
        jobs = self._jobs
        if not jobs:
            return
        n = len(jobs)
        due = now + (jobs[0][0] - self._virtual) / (self._cores / n if n > self._cores else 1.0)
        deadlines = self._deadlines
        while deadlines and deadlines[0][2].outcome is not None:
            heapq.heappop(deadlines)
        if deadlines and deadlines[0][0] < due:
            due = deadlines[0][0]
        if self._wakeup is not None and self._wakeup_at <= due + _EPSILON:
            return  # an earlier wake-up is pending; it will look again
        self._wakeup_at = due
        self._wakeup = event = self._env.timeout(max(due - now, 0.0))
        event.callbacks.append(self._on_wakeup)

    def _on_wakeup(self, event) -> None:
        if event is not self._wakeup:
            return  # superseded by an earlier wake-up
        self._wakeup = None
        self._wakeup_at = float("inf")
        now = self._env.now
        self._advance(now)
        jobs = self._jobs
        done: list[Request] = []
        limit = self._virtual + _EPSILON * max(1.0, self._virtual)
        while jobs and jobs[0][0] <= limit:
            done.append(heapq.heappop(jobs)[2])
        expired: list[Request] = []
        deadlines = self._deadlines
        while deadlines and deadlines[0][0] <= now + _EPSILON:
            request = heapq.heappop(deadlines)[2]
            if request.outcome is None and request not in done:
                expired.append(request)
        if expired:
            self._jobs = [job for job in jobs if job[2] not in expired]
            heapq.heapify(self._jobs)
        for request in done:
            self._pod.finished(request, now)
        for request in expired:
            self._pod.expired(request, now)
        self._schedule(now)


class Pod:
    """One pod: queue-proxy breaker and stats in front of a service model."""

    def __init__(self, sim: PodHost, index: int, now: float) -> None:
        self.sim = sim
        self.index = index
        self.name = f"pod-{index}"
        self.created = now
        self.ready_at: float | None = None
        self.unready_at: float | None = None  # left the endpoints (draining)
        self.gone_at: float | None = None
        self.state = STARTING
        self.in_flight = 0
        self.accepted = 0  # requests routed here over the pod's life, for balance checks
        spec = sim.scenario.revision
        cc = spec.container_concurrency
        # cc = 0 means no breaker at all in the queue-proxy: requests go straight through.
        self.breaker: Breaker[Request] | None = Breaker(spec.queue_depth, cc) if cc > 0 else None
        self.stats = RequestStats(now)
        self.report: StatsReport | None = None
        if spec.service_model == "shared":
            self.service: ParallelService | SharedService = SharedService(self, spec.cores, cc)
        else:
            self.service = ParallelService(self)
        # Where an admitted request goes: straight to the service, or first to its model (loaded on demand).
        self.models: PodModels | None = None
        self._begin = self.service.start
        if sim.models is not None:
            self.models = PodModels(sim.models, sim.env, self.service.start, sim.counts)
            self._begin = self.models.begin
        self._drain_over = False

    # -- requests ---------------------------------------------------------------------------------

    def accept(self, request: Request, now: float) -> bool:
        """The queue-proxy's handler: count the request, then admit, queue or reject it (503)."""
        self.stats.request_in(now, request.proxied)
        self.accepted += 1
        request.pod = self
        breaker = self.breaker
        if breaker is None:
            self.in_flight += 1
            self._begin(request, now)
            return True
        admission = breaker.acquire(request)
        if admission is _ADMITTED:
            self.in_flight += 1
            self._begin(request, now)
            return True
        if admission is _QUEUED:
            self.in_flight += 1
            self.sim.watch_deadline(request, self._queue_timeout)
            return True
        self.stats.request_out(now, request.proxied)
        request.pod = None
        return False

    def finished(self, request: Request, now: float) -> None:
        self._leave(request, now)
        self.sim.completed(request, now)

    def expired(self, request: Request, now: float) -> None:
        self._leave(request, now)
        self.sim.timed_out(request, now)

    def _leave(self, request: Request, now: float) -> None:
        self.stats.request_out(now, request.proxied)
        self.in_flight -= 1
        if self.models is not None:
            self.models.finished(request, now)
        breaker = self.breaker
        if breaker is not None:
            for waiter in breaker.release():
                self._begin(waiter, now)
        if self._drain_over and self.in_flight == 0 and self.state is DRAINING:
            self.sim.fleet.pod_gone(self, now)

    def _queue_timeout(self, request: Request) -> None:
        if request.start >= 0 or request.pod is not self or self.breaker is None:
            return
        if self.breaker.cancel(request):
            now = self.sim.env.now
            self.in_flight -= 1
            self.stats.request_out(now, request.proxied)
            self.sim.timed_out(request, now)
            if self.in_flight == 0 and self._drain_over and self.state is DRAINING:
                self.sim.fleet.pod_gone(self, now)

    # -- life cycle -------------------------------------------------------------------------------

    def become_ready(self, now: float) -> None:
        self.state = READY
        self.ready_at = now
        self.stats = RequestStats(now)

    def cut_report(self, now: float) -> None:
        self.report = self.stats.report(now)

    @property
    def uptime_origin(self) -> float:
        return self.ready_at if self.ready_at is not None else self.created

    def start_draining(self, now: float) -> None:
        """Out of the endpoints: no new requests; gone when in-flight work and the quiet period are over."""
        self.state = DRAINING
        self.unready_at = now

    def drain_period_over(self, now: float) -> bool:
        """Returns True when the pod can go now; otherwise it goes when its last request leaves."""
        self._drain_over = True
        return self.in_flight == 0
