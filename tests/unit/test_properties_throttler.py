"""Properties of the activator's throttler (activator.throttler) over any sequence of operations.

Requests arrive, finish, are retried on another pod, give up, time out; pods come and go, the
activator's slot among its replicas moves, the revision's containerConcurrency and queue bound
change. After every step:

* a grant goes only to an assigned pod, and no pod tracker holds more than ``cc`` grants;
* the revision never holds more grants than its capacity when it hands one out, and no request waits
  while capacity is free;
* the capacity is ``cc × assigned pods`` (unlimited for cc 0, none without pods);
* every ticket ends exactly once — served, expired (never before its deadline), cancelled while
  waiting, or rejected at once because the queue was full — and none is granted twice at a time.
"""

import random

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from activator.throttler import UNLIMITED, Grant, RevisionThrottler
from queueproxy.breaker import Admission

PODS = ("10.0.0.1:8012", "10.0.0.2:8012", "10.0.0.3:8012", "10.0.0.4:8012")
SETTINGS = settings(
    max_examples=100,
    stateful_step_count=80,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)

concurrencies = st.integers(0, 5)  # 0: power of two choices, 1-3: first available, 4-5: round robin
queue_bounds = st.one_of(st.none(), st.integers(0, 4))


class ThrottlerMachine(RuleBasedStateMachine):
    @initialize(cc=concurrencies, bound=queue_bounds)
    def build(self, cc: int, bound: int | None) -> None:
        self.throttler: RevisionThrottler[int] = RevisionThrottler(cc, bound, random.Random(7))
        self.now = 1000.0
        self.next_ticket = 0
        self.granted: dict[int, Grant[int]] = {}  # outstanding grants
        self.waiting: dict[int, float] = {}  # ticket -> deadline
        self.ended: dict[int, str] = {}
        self.cc_changed = False

    # -- bookkeeping ---------------------------------------------------------------------------

    def _end(self, ticket: int, how: str) -> None:
        assert ticket not in self.ended, f"ticket {ticket} ended twice: {self.ended[ticket]}, then {how}"
        self.ended[ticket] = how

    def _new_grants(self, grants: list[Grant[int]]) -> None:
        assigned = set(self.throttler.assigned)
        for grant in grants:
            assert grant.ticket in self.waiting, f"ticket {grant.ticket} granted but it was not waiting"
            assert grant.ticket not in self.granted, f"ticket {grant.ticket} granted twice at a time"
            assert grant.address in assigned, f"{grant.address} is not an assigned pod"
            del self.waiting[grant.ticket]
            self.granted[grant.ticket] = grant
        if grants:
            assert self.throttler.executing <= self.throttler.capacity

    def _outcome(self, ticket: int, outcome: Grant[int] | Admission, deadline: float) -> None:
        if isinstance(outcome, Grant):
            assert outcome.ticket == ticket
            self.waiting[ticket] = deadline  # passes through the same checks as a later admission
            self._new_grants([outcome])
        else:
            assert outcome is Admission.QUEUED
            self.waiting[ticket] = deadline

    # -- rules ---------------------------------------------------------------------------------

    @rule(seconds=st.floats(0, 5))
    def time_passes(self, seconds: float) -> None:
        self.now += seconds

    @rule(timeout=st.floats(0.5, 10))
    def acquire(self, timeout: float) -> None:
        ticket, self.next_ticket = self.next_ticket, self.next_ticket + 1
        throttler = self.throttler
        full = 0 < throttler.waiting >= throttler.effective_queue_bound
        outcome = throttler.acquire(ticket, self.now, self.now + timeout)
        if outcome is Admission.REJECTED:
            assert full, "rejected although the queue had room"
            self._end(ticket, "rejected")
            return
        assert not full, "admitted past the queue bound"
        self._outcome(ticket, outcome, self.now + timeout)

    @precondition(lambda self: self.granted)
    @rule(data=st.data())
    def release(self, data: st.DataObject) -> None:
        ticket = data.draw(st.sampled_from(sorted(self.granted)), label="finished")
        grant = self.granted.pop(ticket)
        self._end(ticket, "served")
        self._new_grants(self.throttler.release(grant, self.now))

    @precondition(lambda self: self.granted)
    @rule(data=st.data(), timeout=st.floats(0.5, 10))
    def retry(self, data: st.DataObject, timeout: float) -> None:
        ticket = data.draw(st.sampled_from(sorted(self.granted)), label="refused")
        grant = self.granted.pop(ticket)
        outcome, others = self.throttler.retry(grant, self.now, self.now + timeout)
        assert outcome is not Admission.REJECTED, "a retry was rejected"
        self._new_grants(others)
        self._outcome(ticket, outcome, self.now + timeout)

    @precondition(lambda self: self.next_ticket)
    @rule(data=st.data())
    def cancel(self, data: st.DataObject) -> None:
        ticket = data.draw(st.integers(0, self.next_ticket - 1), label="ticket")
        waiting = ticket in self.waiting
        assert self.throttler.cancel(ticket) is waiting
        if waiting:
            del self.waiting[ticket]
            self._end(ticket, "cancelled")

    @rule()
    def expire(self) -> None:
        for expired in self.throttler.expire(self.now):
            assert self.waiting.pop(expired.ticket) <= self.now, "expired before its deadline"
            self._end(expired.ticket, "expired")
        assert all(deadline > self.now for deadline in self.waiting.values()), (
            "a waiter outlived its deadline"
        )
        upcoming = self.throttler.next_deadline()
        assert upcoming == (min(self.waiting.values()) if self.waiting else None)

    @rule(
        pods=st.sets(st.sampled_from(PODS)),
        slot=st.one_of(
            st.just((-1, 1)),
            st.integers(1, 3).flatmap(lambda n: st.tuples(st.integers(-1, n - 1), st.just(n))),
        ),
    )
    def update_backends(self, pods: set[str], slot: tuple[int, int]) -> None:
        index, count = slot
        self._new_grants(
            self.throttler.update_backends(pods, self.now, activator_index=index, activator_count=count)
        )

    @rule(cc=concurrencies, bound=queue_bounds)
    def reconfigure(self, cc: int, bound: int | None) -> None:
        self.cc_changed |= cc != self.throttler.container_concurrency
        self._new_grants(self.throttler.reconfigure(cc, bound, self.now))

    # -- invariants ----------------------------------------------------------------------------

    @invariant()
    def within_capacity_and_in_agreement(self) -> None:
        throttler = self.throttler
        cc = throttler.container_concurrency
        assert throttler.executing == len(self.granted)
        assert throttler.waiting == len(self.waiting)
        assigned = throttler.assigned
        want = 0 if not assigned else UNLIMITED if cc == 0 else cc * len(assigned)
        assert throttler.capacity == want
        assert not (self.waiting and throttler.executing < throttler.capacity), (
            "waiting while capacity is free"
        )
        per_tracker: dict[int, int] = {}
        per_pod: dict[str, int] = {}
        for grant in self.granted.values():
            per_tracker[id(grant.tracker)] = per_tracker.get(id(grant.tracker), 0) + 1
            per_pod[grant.address] = per_pod.get(grant.address, 0) + 1
        for grant in self.granted.values():
            tracker = grant.tracker
            assert tracker.in_flight == per_tracker[id(tracker)]
            if tracker.breaker is not None:
                assert tracker.in_flight <= tracker.breaker.max_concurrency
        if cc and not self.cc_changed:
            # A containerConcurrency change starts fresh trackers while old requests finish (documented
            # in RevisionThrottler.reconfigure); otherwise no pod ever holds more than cc requests.
            assert max(per_pod.values(), default=0) <= cc
        for address in assigned:
            assert throttler.in_flight_at(address) <= (cc or UNLIMITED)

    def teardown(self) -> None:
        if not hasattr(self, "throttler"):
            return
        self._new_grants(self.throttler.update_backends(PODS, self.now))
        while self.granted:
            ticket = min(self.granted)
            grant = self.granted.pop(ticket)
            self._end(ticket, "served")
            self._new_grants(self.throttler.release(grant, self.now))
        assert not self.waiting, "requests still waiting with four free pods"
        assert (self.throttler.executing, self.throttler.waiting) == (0, 0)
        assert sorted(self.ended) == list(range(self.next_ticket)), "a ticket never ended"
        assert all(self.throttler.in_flight_at(pod) == 0 for pod in PODS)


TestThrottlerProperties = ThrottlerMachine.TestCase
TestThrottlerProperties.settings = SETTINGS
