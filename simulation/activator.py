"""The activator in simulated time: hold requests while no pod can take them, throttle to pod capacity.

Mirrors Knative's throttler for one revision behind one activator (pkg/activator/net/throttler.go):

* cc > 0: a revision breaker (the real :class:`~queueproxy.breaker.Breaker`: FIFO queue of
  ``queue_depth``, capacity ``cc × pods``) in front of per-pod trackers (breakers used only through
  ``reserve``), picked first-available for cc 1–3 and round-robin above 3;
* cc = 0: an "infinite" breaker that only blocks while there is no pod at all, then power of two
  choices by in-flight count, ties broken at random.

Its stats follow pkg/activator/handler/concurrency_reporter.go: one time-weighted
:class:`~queueproxy.stats.RequestStats` counting every request from arrival to response (queueing
included); the first request of an untracked revision is reported at once as concurrency 1 and
subtracted from the next 1 s report; an entry whose report averaged 0 is dropped, so the next
request is reported at once again.
"""

from __future__ import annotations

import heapq
import random
from collections import deque
from typing import TYPE_CHECKING

from autoscaler.stat import Stat
from queueproxy.breaker import Admission, Breaker
from queueproxy.stats import RequestStats

if TYPE_CHECKING:
    from simulation.engine import Simulation
    from simulation.pods import Pod, Request

ACTIVATOR_NAME = "activator-0"
REPORT_INTERVAL = 1.0
TRACKER_QUEUE_DEPTH = 10_000  # Knative's pod trackers never queue: they are used through reserve()
UNBOUNDED = 2**31 - 1  # the revision breaker's MaxConcurrency (MaxInt32)


class _Tracker:
    """A pod as the activator sees it: a reserve-only breaker for cc > 0, an in-flight count for cc = 0."""

    __slots__ = ("active", "breaker", "in_flight", "listed", "pod")

    def __init__(self, pod: Pod, cc: int) -> None:
        self.pod = pod
        self.in_flight = 0
        self.active = True  # still among the revision's endpoints
        self.listed = False  # in the first-available heap of trackers with a free slot
        self.breaker: Breaker[Request] | None = Breaker(TRACKER_QUEUE_DEPTH, cc) if cc > 0 else None


class Activator:
    def __init__(self, sim: Simulation, queue_depth: int, rng: random.Random) -> None:
        self._sim = sim
        self._rng = rng
        self._cc = cc = sim.scenario.revision.container_concurrency
        self._trackers: list[_Tracker] = []  # in pod order (Knative sorts trackers by address)
        self._by_pod: dict[Pod, _Tracker] = {}
        self._next = 0  # round-robin position
        # First-available (cc 1–3) scans trackers in order for the first free one; a heap of the free
        # ones keyed by position gives the same pick without the scan.
        self._free: list[tuple[int, _Tracker]] = []
        self._breaker: Breaker[Request] | None = (
            Breaker(queue_depth, UNBOUNDED, initial_capacity=0) if cc > 0 else None
        )
        self._held: deque[Request] = deque()  # cc = 0: requests held while there is no pod
        self.stats = RequestStats(sim.env.now)
        self._tracked = False
        self._first_request = 0.0
        self.in_flight = 0

    # -- capacity ---------------------------------------------------------------------------------

    @property
    def capacity(self) -> int:
        return self._breaker.capacity if self._breaker is not None else (1 if self._trackers else 0)

    @property
    def waiting(self) -> int:
        return self._breaker.waiting if self._breaker is not None else len(self._held)

    def add_pod(self, pod: Pod, now: float) -> None:
        tracker = _Tracker(pod, self._cc)
        self._trackers.append(tracker)
        self._trackers.sort(key=lambda t: t.pod.index)
        self._by_pod[pod] = tracker
        self._list_free(tracker)
        self._capacity_changed(now)

    def remove_pod(self, pod: Pod, now: float) -> None:
        tracker = self._by_pod.pop(pod, None)
        if tracker is not None:
            tracker.active = False
            self._trackers.remove(tracker)
            self._capacity_changed(now)

    def _list_free(self, tracker: _Tracker) -> None:
        if 0 < self._cc <= 3 and tracker.active and not tracker.listed:
            tracker.listed = True
            heapq.heappush(self._free, (tracker.pod.index, tracker))

    def _capacity_changed(self, now: float) -> None:
        if self._breaker is not None:
            for request in self._breaker.update_concurrency(min(self._cc * len(self._trackers), UNBOUNDED)):
                self._send(request, now)
        elif self._trackers:
            while self._held:
                self._send(self._held.popleft(), now)

    # -- requests ---------------------------------------------------------------------------------

    def accept(self, request: Request, now: float) -> None:
        if not self._tracked:
            # A fresh entry per tracking period, as Knative creates one on the first request.
            self._tracked = True
            self.stats = RequestStats(now)
            self._first_request = 1.0
            self._sim.push_stat(
                Stat(
                    pod_name=ACTIVATOR_NAME, average_concurrent_requests=1.0, request_count=1.0, timestamp=now
                ),
                now,
            )
        self.stats.request_in(now)
        self.in_flight += 1
        request.proxied = True
        breaker = self._breaker
        if breaker is None:
            if self._trackers:
                self._send(request, now)
            else:
                request.cold = True
                self._held.append(request)
                self._sim.watch_deadline(request, self._hold_timeout)
            return
        cold = breaker.capacity == 0
        admission = breaker.acquire(request)
        if admission is Admission.ADMITTED:
            self._send(request, now)
        elif admission is Admission.QUEUED:
            request.cold = cold
            self._sim.watch_deadline(request, self._hold_timeout)
        else:
            self._sim.rejected(request, now)

    def _pick(self) -> _Tracker | None:
        trackers = self._trackers
        n = len(trackers)
        if not n:
            return None
        cc = self._cc
        if cc == 0:
            if n == 1:
                return trackers[0]
            first, second = self._rng.sample(trackers, 2)
            if first.in_flight == second.in_flight:
                return first  # sample() already ordered them at random
            return first if first.in_flight < second.in_flight else second
        if cc <= 3:
            free = self._free
            while free:
                tracker = free[0][1]
                if tracker.active and tracker.breaker.reserve():
                    if tracker.breaker.executing >= cc:
                        heapq.heappop(free)
                        tracker.listed = False
                    return tracker
                heapq.heappop(free)
                tracker.listed = False
            return None
        start = self._next
        for offset in range(n):
            i = (start + offset) % n
            if trackers[i].breaker.reserve():
                self._next = i + 1
                return trackers[i]
        return None

    def _send(self, request: Request, now: float) -> None:
        tracker = self._pick()
        if tracker is None:
            # Tokens never exceed free pod slots with one activator: capacity is cc × pods and every
            # executing request, on a current pod or a draining one, holds a token.
            raise RuntimeError("activator: a revision token but no pod with a free slot")
        tracker.in_flight += 1
        request.tracker = tracker
        if not tracker.pod.accept(request, now):
            self._sim.rejected(request, now)

    def finished(self, request: Request, now: float) -> None:
        """The response (any status) went back through the activator: free its slots."""
        tracker: _Tracker | None = request.tracker
        if tracker is not None:
            request.tracker = None
            tracker.in_flight -= 1
            if tracker.breaker is not None:
                tracker.breaker.release()
                if not tracker.listed:
                    self._list_free(tracker)
                for waiter in self._breaker.release():
                    self._send(waiter, now)
        self.stats.request_out(now)
        self.in_flight -= 1

    def _hold_timeout(self, request: Request) -> None:
        if request.start >= 0 or request.pod is not None or request.outcome is not None:
            return
        if self._breaker is not None:
            if not self._breaker.cancel(request):
                return
        else:
            try:
                self._held.remove(request)
            except ValueError:
                return
        self._sim.timed_out(request, self._sim.env.now)

    # -- stats ------------------------------------------------------------------------------------

    def report(self, now: float) -> Stat | None:
        """The 1 s report: None while the revision is untracked (no traffic since the last idle report)."""
        if not self._tracked:
            return None
        report = self.stats.report(now)
        first, self._first_request = self._first_request, 0.0
        if report.average_concurrency == 0:
            self._tracked = False
        return Stat(
            pod_name=ACTIVATOR_NAME,
            average_concurrent_requests=max(report.average_concurrency - first, 0.0),
            request_count=max(report.request_count - first, 0.0),
            timestamp=now,
        )
