"""The activator's throttler: admit a request only when one of the revision's pods can take it.

Two levels, as in Knative's pkg/activator/net/throttler.go. A *revision breaker* (the shared pure
``queueproxy.breaker.Breaker``) holds a token per free concurrency slot across the assigned pods,
``cc × pods``, and a FIFO of waiting requests. Each pod has a *tracker*; a token is turned into a
destination by the load-balancing policy, which reserves a slot on one tracker. Because this core is
single-threaded and the revision capacity always equals the assigned trackers' slots, an admitted
request always finds a pod — Knative's "release and re-enqueue" race cannot happen here.

Nothing here blocks or reads a clock. ``acquire`` says run now (a ``Grant`` naming the pod), wait,
or reject; ``release``, ``update_backends`` and ``retry`` return the waiters admitted as a result;
``expire(now)`` hands back the waiters whose deadline passed. The asyncio shell parks a future per
ticket; the simulator (``simulation/activator.py``) runs the same core under simpy's clock.

Unlike Knative, whose revision queue is effectively unbounded (its queue-full 503 is unreachable),
the wait queue here is bounded: ``RevisionConfig.queue_bound_for(pods)``; past it ``acquire``
rejects at once and the shell answers 503 with Retry-After.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

from activator.config import default_queue_bound
from queueproxy.breaker import Admission, Breaker

T = TypeVar("T")

# Knative builds the revision breaker with MaxInt32 slots and treats cc=0 capacity as MaxInt32.
UNLIMITED = 2**31 - 1
# Knative's pod-tracker breaker queue depth; trackers are only used through reserve(), so it never queues.
_TRACKER_QUEUE_DEPTH = 10_000
# acquire() runs per request; an enum member looked up on its class costs ~80 ns in CPython 3.11.
_ADMITTED, _QUEUED, _REJECTED = Admission.ADMITTED, Admission.QUEUED, Admission.REJECTED


@dataclass(eq=False, slots=True)
class PodTracker:
    """One pod's in-flight count, and for cc > 0 a breaker that refuses past cc."""

    address: str
    breaker: Breaker[None] | None  # None for cc = 0: no per-pod limit
    in_flight: int = 0
    host_header: bytes = field(init=False)  # the address as a Host header, encoded once

    def __post_init__(self) -> None:
        self.host_header = self.address.encode()

    @classmethod
    def for_concurrency(cls, address: str, container_concurrency: int) -> PodTracker:
        if container_concurrency <= 0:
            return cls(address, None)
        return cls(address, Breaker(_TRACKER_QUEUE_DEPTH, container_concurrency))

    def reserve(self) -> bool:
        if self.breaker is not None and not self.breaker.reserve():
            return False
        self.in_flight += 1
        return True

    def release(self) -> None:
        if self.breaker is not None:
            self.breaker.release()
        self.in_flight -= 1


class LbPolicy(Protocol):
    def pick(self, trackers: Sequence[PodTracker]) -> PodTracker | None:
        """Reserve a slot on one tracker and return it, or None if none has a free slot."""

    def released(self, tracker: PodTracker) -> None:
        """A slot on ``tracker`` came free."""


class FirstAvailable:
    """cc 1–3: take the first pod in address order with a free slot (packs pods densely).

    Knative scans the pods from the first on every pick. The same choice comes from a min-heap of the
    positions that may have a free slot — full ones leave it when found full, a release puts its pod
    back — so a revision of a thousand busy pods costs a pick a few heap steps, not a thousand checks.
    """

    def __init__(self) -> None:
        self._trackers: Sequence[PodTracker] = ()
        self._position: dict[int, int] = {}  # id(tracker) -> its position in _trackers
        self._maybe_free: list[int] = []  # positions, a heap
        self._listed = bytearray()

    def pick(self, trackers: Sequence[PodTracker]) -> PodTracker | None:
        if trackers is not self._trackers:  # a new pod list (the throttler rebuilds it on every change)
            self._trackers = trackers
            self._position = {id(t): i for i, t in enumerate(trackers)}
            self._maybe_free = list(range(len(trackers)))
            self._listed = bytearray(b"\x01" * len(trackers))
        heap = self._maybe_free
        while heap:
            position = heap[0]
            tracker = trackers[position]
            if tracker.reserve():
                return tracker
            heapq.heappop(heap)  # full: it comes back with its next release
            self._listed[position] = 0
        return None

    def released(self, tracker: PodTracker) -> None:
        position = self._position.get(id(tracker))
        if position is not None and not self._listed[position] and self._trackers[position] is tracker:
            self._listed[position] = 1
            heapq.heappush(self._maybe_free, position)


@dataclass
class RoundRobin:
    """cc > 3: start after the pod chosen last, take the first with a free slot."""

    next_index: int = 0

    def pick(self, trackers: Sequence[PodTracker]) -> PodTracker | None:
        count = len(trackers)
        if self.next_index >= count:  # the pod list shrank
            self.next_index = 0
        for step in range(count):
            index = (self.next_index + step) % count
            if trackers[index].reserve():
                self.next_index = index + 1
                return trackers[index]
        return None

    def released(self, tracker: PodTracker) -> None:
        pass


@dataclass
class PowerOfTwoChoices:
    """cc = 0: of two distinct random pods take the one with fewer requests in flight (ties at random)."""

    rng: random.Random

    def pick(self, trackers: Sequence[PodTracker]) -> PodTracker | None:
        if not trackers:
            return None
        if len(trackers) == 1:
            choice = trackers[0]
        else:
            first = self.rng.randrange(len(trackers))
            second = self.rng.randrange(len(trackers) - 1)
            if second >= first:
                second += 1
            a, b = trackers[first], trackers[second]
            if a.in_flight == b.in_flight:
                choice = a if self.rng.random() < 0.5 else b
            else:
                choice = a if a.in_flight < b.in_flight else b
        choice.reserve()
        return choice

    def released(self, tracker: PodTracker) -> None:
        pass


def lb_policy_for(container_concurrency: int, rng: random.Random) -> LbPolicy:
    if container_concurrency == 0:
        return PowerOfTwoChoices(rng)
    if container_concurrency <= 3:
        return FirstAvailable()
    return RoundRobin()


def assign_slice(addresses: Iterable[str], activator_index: int, activator_count: int) -> list[str]:
    """The pods this activator replica sends to when ``activator_count`` replicas front one revision.

    Every replica computes the same split from the same sorted list, so each pod is assigned to
    exactly one replica when there are at least as many pods as replicas: contiguous slices of
    ``pods // activators``, plus one of the ``pods % activators`` leftover pods at the tail for the
    first replicas. With more replicas than pods each replica takes pod ``index mod pods``. An
    unknown index (-1), one replica or at most one pod means: take them all. (Only for cc > 0;
    with cc = 0 every replica uses every pod.)
    """
    pods = sorted(addresses)
    if activator_index < 0 or activator_count <= 1 or len(pods) <= 1:
        return pods
    if activator_count > len(pods):
        return [pods[activator_index % len(pods)]]
    size = len(pods) // activator_count
    start = activator_index * size
    mine = pods[start : start + size]
    remnants = len(pods) % activator_count
    if activator_index < remnants:
        mine.append(pods[len(pods) - remnants + activator_index])
    return mine


class Grant(Generic[T]):
    """Permission for ``ticket`` to send one request to ``tracker``'s pod; give it back with release().

    A plain slotted class, not a frozen dataclass: one is made per request on the hot path."""

    __slots__ = ("ticket", "tracker", "waited")

    def __init__(self, ticket: T, tracker: PodTracker, waited: float) -> None:
        self.ticket = ticket
        self.tracker = tracker
        self.waited = waited  # seconds between arrival and admission (0 when admitted at once)

    @property
    def address(self) -> str:
        return self.tracker.address


@dataclass(frozen=True, slots=True)
class Expired(Generic[T]):
    """A waiter whose deadline passed before it got capacity."""

    ticket: T
    waited: float


@dataclass(slots=True)
class _Waiter:
    arrived: float
    deadline: float
    seq: int


@dataclass
class RevisionThrottler(Generic[T]):
    """Capacity, wait queue and pod choice for one revision (see the module docstring)."""

    container_concurrency: int
    queue_bound: int | None = None  # None: default_queue_bound(cc, assigned pods)
    rng: random.Random = field(default_factory=random.Random)
    _breaker: Breaker[T] = field(init=False)
    _policy: LbPolicy = field(init=False)
    _trackers: dict[str, PodTracker] = field(init=False, default_factory=dict)
    _assigned: list[PodTracker] = field(init=False, default_factory=list)
    _assigned_set: frozenset[str] = field(init=False, default=frozenset())
    _healthy: tuple[str, ...] = field(init=False, default=())
    _slot: tuple[int, int] = field(init=False, default=(-1, 1))
    _waiters: dict[T, _Waiter] = field(init=False, default_factory=dict)
    _deadlines: list[tuple[float, int, T]] = field(init=False, default_factory=list)
    _seq: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        if self.container_concurrency < 0:
            raise ValueError(f"container_concurrency={self.container_concurrency}: must be >= 0")
        # The bound is applied by acquire(); the breaker's own slot limit stays out of the way.
        self._breaker = Breaker(queue_depth=1, max_concurrency=UNLIMITED, initial_capacity=0)
        self._policy = lb_policy_for(self.container_concurrency, self.rng)

    # -- state ---------------------------------------------------------------------------------

    @property
    def capacity(self) -> int:
        return self._breaker.capacity

    @property
    def waiting(self) -> int:
        return self._breaker.waiting

    @property
    def executing(self) -> int:
        return self._breaker.executing

    @property
    def assigned(self) -> list[str]:
        return [t.address for t in self._assigned]

    @property
    def effective_queue_bound(self) -> int:
        if self.queue_bound is not None:
            return self.queue_bound
        return default_queue_bound(self.container_concurrency, len(self._assigned))

    def in_flight_at(self, address: str) -> int:
        tracker = self._trackers.get(address)
        return tracker.in_flight if tracker else 0

    def next_deadline(self) -> float | None:
        """When the earliest waiter times out; the shell arms one timer for it."""
        self._drop_stale_deadlines()
        return self._deadlines[0][0] if self._deadlines else None

    # -- requests ------------------------------------------------------------------------------

    def acquire(
        self, ticket: T, now: float, deadline: float, *, arrived: float | None = None, bounded: bool = True
    ) -> Grant[T] | Admission:
        """A Grant to send now, ``Admission.QUEUED`` to wait, or ``Admission.REJECTED`` (queue full).

        ``arrived`` (default ``now``) is when the request first asked, for the waited figure;
        ``bounded=False`` lets a request that was already admitted once (a retry) in past the bound.
        """
        arrived = now if arrived is None else arrived
        waiting = self._breaker.waiting
        if bounded and waiting and waiting >= self.effective_queue_bound:
            return _REJECTED
        if self._breaker.acquire(ticket) is _ADMITTED:
            return self._grant(ticket, now - arrived)
        self._seq += 1
        self._waiters[ticket] = _Waiter(arrived, deadline, self._seq)
        heapq.heappush(self._deadlines, (deadline, self._seq, ticket))
        return _QUEUED

    def release(self, grant: Grant[T], now: float) -> list[Grant[T]]:
        """The request behind ``grant`` finished (or failed); returns the waiters admitted now."""
        tracker = grant.tracker
        tracker.release()
        self._policy.released(tracker)
        address = tracker.address
        gone = address not in self._assigned_set and self._trackers.get(address) is tracker
        if gone and tracker.in_flight == 0:
            del self._trackers[address]  # a pod that left while busy: forget it once idle
        admitted = self._breaker.release()
        return self._admit(admitted, now) if admitted else []

    def retry(
        self, grant: Grant[T], now: float, deadline: float
    ) -> tuple[Grant[T] | Admission, list[Grant[T]]]:
        """Send ``grant``'s request again after its pod refused it: another pod now, or wait again.

        Call after ``update_backends`` dropped the failed pod. Returns the new outcome for the ticket
        (never REJECTED: it was admitted once) and any other waiters admitted by freeing its slot.
        """
        others = self.release(grant, now)
        outcome = self.acquire(grant.ticket, now, deadline, arrived=now - grant.waited, bounded=False)
        return outcome, others

    def cancel(self, ticket: T) -> bool:
        """A waiter gave up (client gone). False if it was not waiting."""
        if not self._breaker.cancel(ticket):
            return False
        del self._waiters[ticket]
        return True

    def expire(self, now: float) -> list[Expired[T]]:
        """Remove and return the waiters whose deadline is at or before ``now`` (the shell answers 504)."""
        expired: list[Expired[T]] = []
        while True:
            self._drop_stale_deadlines()
            if not self._deadlines or self._deadlines[0][0] > now:
                return expired
            _, _, ticket = heapq.heappop(self._deadlines)
            waiter = self._waiters.pop(ticket)
            self._breaker.cancel(ticket)
            expired.append(Expired(ticket, now - waiter.arrived))

    # -- pods ----------------------------------------------------------------------------------

    def update_backends(
        self, healthy: Iterable[str], now: float, *, activator_index: int = -1, activator_count: int = 1
    ) -> list[Grant[T]]:
        """Set the healthy pods (and this replica's place among activators); returns admitted waiters."""
        self._healthy = tuple(sorted(set(healthy)))
        self._slot = (activator_index, activator_count)
        return self._reassign(now)

    def reconfigure(self, container_concurrency: int, queue_bound: int | None, now: float) -> list[Grant[T]]:
        """Apply a changed revision config. A cc change starts fresh per-pod accounting (Knative never
        changes cc of a revision; requests in flight finish on their old trackers)."""
        self.queue_bound = queue_bound
        if container_concurrency != self.container_concurrency:
            self.container_concurrency = container_concurrency
            self._policy = lb_policy_for(container_concurrency, self.rng)
            self._trackers = {}
            self._assigned = []
            self._assigned_set = frozenset()
        return self._reassign(now)

    def _reassign(self, now: float) -> list[Grant[T]]:
        cc = self.container_concurrency
        chosen = self._healthy if cc == 0 else assign_slice(self._healthy, *self._slot)
        self._assigned_set = frozenset(chosen)
        for old in self._assigned:
            if old.address not in self._assigned_set and old.in_flight == 0:
                del self._trackers[old.address]
        trackers = self._trackers
        assigned = []
        for address in chosen:  # an existing tracker keeps its in-flight count; only new pods get one
            tracker = trackers.get(address)
            if tracker is None:
                tracker = trackers[address] = PodTracker.for_concurrency(address, cc)
            assigned.append(tracker)
        self._assigned = assigned
        if not self._assigned:
            capacity = 0
        elif cc == 0:
            capacity = UNLIMITED
        else:
            capacity = min(UNLIMITED, cc * len(self._assigned))
        return self._admit(self._breaker.update_concurrency(capacity), now)

    # -- internals -----------------------------------------------------------------------------

    def _admit(self, tickets: list[T], now: float) -> list[Grant[T]]:
        grants = []
        for ticket in tickets:
            waiter = self._waiters.pop(ticket)
            grants.append(self._grant(ticket, waited=now - waiter.arrived))
        return grants

    def _grant(self, ticket: T, waited: float) -> Grant[T]:
        tracker = self._policy.pick(self._assigned)
        if tracker is None:  # capacity == free slots of assigned trackers, so a token always finds a pod
            raise AssertionError(f"throttler admitted {ticket!r} but no pod has a free slot")
        return Grant(ticket, tracker, waited)

    def _drop_stale_deadlines(self) -> None:
        while self._deadlines:
            _, seq, ticket = self._deadlines[0]
            waiter = self._waiters.get(ticket)
            if waiter is not None and waiter.seq == seq:
                return
            heapq.heappop(self._deadlines)
