"""The revision's pods under simulated time, kept as a Deployment's ReplicaSet keeps them.

The autoscaler's decision sets the replica count (:meth:`Fleet.set_replicas`); the fleet creates pods
that become ready after a drawn cold start, and removes the surplus as a ReplicaSet does: pods still
starting first (they go at once), then the youngest ready ones, which drain — out of the endpoints
and the activator's view, finishing what they hold — and are gone after the platform's drain period
or when their last request is done.

``starting``, ``ready`` and ``draining`` are lists changed in place, so the simulation routes from
``ready`` without a lookup. A pod that is gone leaves only its four times behind (32 bytes, for the
pod figures of the report), not the pod.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Callable
from typing import TYPE_CHECKING, NamedTuple

from simulation import limits
from simulation.pods import DRAINING, GONE, READY, REPORT_INTERVAL, STARTING, Pod

if TYPE_CHECKING:
    from typing import Protocol

    import simpy

    from simulation.pods import PodHost

    class FleetActivator(Protocol):
        def add_pod(self, pod: Pod, now: float) -> None: ...
        def remove_pod(self, pod: Pod, now: float) -> None: ...

    class FleetPlacement(Protocol):
        """Where pods run when revisions share nodes: ``start`` is called once the pod has a node."""

        def request(self, pod: Pod, start: Callable[[], None]) -> None: ...
        def release(self, pod: Pod) -> None: ...

    class FleetHost(PodHost, Protocol):
        """What the fleet (and the pods it makes) needs of the simulation: a Protocol, so the fleet
        never imports the engine."""

        @property
        def activator(self) -> FleetActivator: ...
        @property
        def warmup(self) -> float: ...
        @property
        def duration(self) -> float: ...


class PodLife(NamedTuple):
    """When a pod was created, ready, out of the endpoints and gone (None: not yet), for pod figures."""

    created: float
    ready_at: float | None
    unready_at: float | None
    gone_at: float | None


class Fleet:
    """The pods of the simulated revision: created, started, ready, drained, gone; and their times."""

    def __init__(self, sim: FleetHost, cold_start: Callable[[], float]) -> None:
        self._sim = sim
        self._env = sim.env
        self._cold_start = cold_start
        self._drain_period = sim.scenario.platform.drain_period
        self._alive: dict[int, Pod] = {}  # starting, ready or draining pods by index
        self._lives = [array("d") for _ in PodLife._fields]  # every pod's times by index; NaN = None
        self.starting: list[Pod] = []
        self.ready: list[Pod] = []
        self.draining: list[Pod] = []
        self.replicas = 0
        self.scale_events = 0  # changes of the replica count between the warm-up and the end
        self.placement: FleetPlacement | None = None  # nodes shared with other revisions; None: room always

    def set_replicas(self, wanted: int, now: float) -> None:
        current = len(self.starting) + len(self.ready)
        if wanted == current:
            return
        limits.check_pods(
            f"the autoscaler's decision at {now:g} s", wanted, "set max-scale or lower the rate"
        )
        if self._sim.warmup <= now < self._sim.duration:
            self.scale_events += 1
        self.replicas = wanted
        for _ in range(wanted - current):
            self._create_pod(now)
        # Like a ReplicaSet: not-ready pods go first, then the youngest ready ones.
        for _ in range(current - wanted):
            if self.starting:
                pod = self.starting.pop()
                pod.state = GONE
                pod.gone_at = now
                self._retire(pod)
            else:
                self._drain(self.ready.pop(), now)

    def _create_pod(self, now: float) -> None:
        created, *times = self._lives
        pod = Pod(self._sim, len(created), now)
        created.append(now)
        for column in times:
            column.append(math.nan)
        self._alive[pod.index] = pod
        self.starting.append(pod)
        cold_start = self._cold_start()
        if self.placement is None:
            self._start(pod, cold_start)
        else:  # its start-up begins once a node has room (simulation.cluster)
            self.placement.request(pod, lambda: self._start(pod, cold_start))

    def _start(self, pod: Pod, cold_start: float) -> None:
        event = self._env.timeout(cold_start)
        event.callbacks.append(lambda _event: self._pod_ready(pod))

    def _pod_ready(self, pod: Pod) -> None:
        if pod.state is not STARTING:
            return  # scaled away while starting
        env = self._env
        now = env.now
        self.starting.remove(pod)
        pod.become_ready(now)
        self.ready.append(pod)
        self._sim.activator.add_pod(pod, now)

        def report(_event: simpy.Event) -> None:
            if pod.state is READY:
                pod.cut_report(env.now)
                again = env.timeout(REPORT_INTERVAL)
                again.callbacks.append(report)

        first = env.timeout(REPORT_INTERVAL)
        first.callbacks.append(report)

    def _drain(self, pod: Pod, now: float) -> None:
        pod.start_draining(now)
        self._sim.activator.remove_pod(pod, now)
        self.draining.append(pod)

        def quiet(_event: simpy.Event) -> None:
            if pod.drain_period_over(self._env.now):
                self.pod_gone(pod, self._env.now)

        event = self._env.timeout(self._drain_period)
        event.callbacks.append(quiet)

    def pod_gone(self, pod: Pod, now: float) -> None:
        if pod.state is DRAINING:
            self.draining.remove(pod)
        pod.state = GONE
        pod.gone_at = now
        self._retire(pod)

    def _retire(self, pod: Pod) -> None:
        """Keep a gone pod's times only (32 bytes), not the pod."""
        if self.placement is not None:
            self.placement.release(pod)
        _, ready_at, unready_at, gone_at = self._lives
        for column, value in ((ready_at, pod.ready_at), (unready_at, pod.unready_at), (gone_at, pod.gone_at)):
            column[pod.index] = math.nan if value is None else value
        del self._alive[pod.index]

    @property
    def pods(self) -> list[Pod]:
        """The pods alive now (starting, ready or draining), oldest first."""
        return list(self._alive.values())

    def lives(self) -> list[PodLife]:
        """Every pod's times, in creation order (the order pod figures are summed in)."""
        lives = []
        for i, times in enumerate(zip(*self._lives, strict=True)):
            pod = self._alive.get(i)
            if pod is not None:
                lives.append(PodLife(pod.created, pod.ready_at, pod.unready_at, pod.gone_at))
            else:
                created, *later = times  # a pod's creation time is always known
                lives.append(PodLife(created, *(None if math.isnan(t) else t for t in later)))
        return lives
