"""The activator in simulated time: the live activator's throttler, driven by simpy's clock.

Capacity, the pooled wait queue and the choice of pod are the real
:class:`activator.throttler.RevisionThrottler` — the same pure core ``activator/server.py`` runs —
with the pods' names as addresses and the simulation's requests as tickets. This module is only its
shell: it hands admitted requests to the chosen pod, gives the grant back when the response goes
out, and keeps one simpy timer on the throttler's earliest deadline to answer 504 to waiters whose
``timeout`` ran out. The wait queue is bounded by ``platform.activator_queue_depth``; past it a
request gets a 503 at once.

Its stats follow pkg/activator/handler/concurrency_reporter.go: one time-weighted
:class:`~queueproxy.stats.RequestStats` counting every request from arrival to response (queueing
included); the first request of an untracked revision is reported at once as concurrency 1 and
subtracted from the next 1 s report; an entry whose report averaged 0 is dropped, so the next
request is reported at once again.
"""

from __future__ import annotations

import math
import random
from typing import TYPE_CHECKING

import simpy

from activator.throttler import Grant, RevisionThrottler
from autoscaler.stat import Stat
from queueproxy.breaker import Admission
from queueproxy.stats import RequestStats

if TYPE_CHECKING:
    from typing import Protocol

    from simulation.pods import Pod, Request
    from simulation.scenario import Scenario

    class ActivatorHost(Protocol):
        """What the activator needs of the simulation: a Protocol, so it never imports the engine."""

        @property
        def env(self) -> simpy.Environment: ...
        @property
        def scenario(self) -> Scenario: ...
        def push_stat(self, stat: Stat, now: float) -> None: ...
        def rejected(self, request: Request, now: float) -> None: ...
        def timed_out(self, request: Request, now: float) -> None: ...

ACTIVATOR_NAME = "activator-0"
REPORT_INTERVAL = 1.0
_QUEUED = Admission.QUEUED


class SimulatedActivator:
    def __init__(self, sim: ActivatorHost, queue_depth: int, rng: random.Random) -> None:
        self._sim = sim
        self._env = sim.env
        cc = sim.scenario.revision.container_concurrency
        self._throttler: RevisionThrottler[Request] = RevisionThrottler(cc, queue_bound=queue_depth, rng=rng)
        self._endpoints: dict[str, Pod] = {}  # the revision's ready pods, by the address the throttler knows
        self._pods: dict[str, Pod] = {}  # every pod the throttler may still name in a grant
        self._endpoints_update_due = False
        self._expiry: simpy.Event | None = None  # the timer for the earliest waiter's deadline
        self._expiry_at = math.inf
        self.stats = RequestStats(sim.env.now)
        self._tracked = False
        self._first_request = 0.0

    @property
    def waiting(self) -> int:
        return self._throttler.waiting

    # -- pods -------------------------------------------------------------------------------------

    def add_pod(self, pod: Pod, now: float) -> None:
        self._endpoints[pod.name] = self._pods[pod.name] = pod
        self._endpoints_changed()

    def remove_pod(self, pod: Pod, now: float) -> None:
        """Out of the endpoints: no new requests; those it holds finish and give their slots back."""
        if self._endpoints.pop(pod.name, None) is not None:
            self._endpoints_changed()

    def _endpoints_changed(self) -> None:
        """Like Knative's activator, which watches endpoints through an informer, take the changes of
        one instant as one update: a scale-up of a thousand pods that start together costs one
        update of the throttler, not a thousand."""
        if not self._endpoints_update_due:
            self._endpoints_update_due = True
            self._env.timeout(0).callbacks.append(self._update_endpoints)

    def _update_endpoints(self, _event: simpy.Event) -> None:
        self._endpoints_update_due = False
        now = self._env.now
        self._send_all(self._throttler.update_backends(self._endpoints, now), now)

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
        request.proxied = True
        throttler = self._throttler
        outcome = throttler.acquire(request, now, request.deadline)
        if outcome.__class__ is Grant:
            self._send(outcome, now)
        elif outcome is _QUEUED:
            request.cold = throttler.capacity == 0  # waits for a pod to start (acquire leaves capacity alone)
            if request.deadline < self._expiry_at:
                self._arm(request.deadline)
        else:
            self._sim.rejected(request, now)

    def _send(self, grant: Grant[Request], now: float) -> None:
        request = grant.ticket
        request.grant = grant
        if not self._pods[grant.tracker.address].accept(request, now):
            self._sim.rejected(request, now)

    def _send_all(self, grants: list[Grant[Request]], now: float) -> None:
        for grant in grants:
            self._send(grant, now)

    def finished(self, request: Request, now: float) -> None:
        """The response (any status) went back through the activator: give its slot back."""
        grant = request.grant
        if grant is not None:
            request.grant = None
            admitted = self._throttler.release(grant, now)
            if admitted:
                self._send_all(admitted, now)
        self.stats.request_out(now)

    # -- deadlines --------------------------------------------------------------------------------

    def _arm(self, deadline: float) -> None:
        self._expiry_at = deadline
        self._expiry = timer = self._env.timeout(max(deadline - self._env.now, 0.0))
        timer.callbacks.append(self._on_expiry)

    def _on_expiry(self, timer: simpy.Event) -> None:
        if timer is not self._expiry:
            return  # superseded by an earlier deadline; that timer re-arms for the rest
        due = self._expiry_at
        self._expiry = None
        self._expiry_at = math.inf
        now = self._env.now
        # The timer is due at its deadline even where float rounding put simpy's clock a hair before it.
        for expired in self._throttler.expire(max(now, due)):
            self._sim.timed_out(expired.ticket, now)
        deadline = self._throttler.next_deadline()
        if deadline is not None:
            self._arm(deadline)

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
