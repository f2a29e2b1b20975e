"""Properties of the breaker (queueproxy.breaker) over any sequence of operations (hypothesis).

A model beside the breaker tracks every ticket: which run, which wait and in what order. After each
step the breaker must agree with the model and keep Knative's bounds — in flight (waiting plus
running) at most ``queue_depth + max_concurrency``, running at most ``max_concurrency``, no waiter
while a token is free — and every acquire is answered exactly once: admitted (at once or later, in
FIFO order), rejected at once, or cancelled while waiting. At the end, releasing everything brings
the breaker back to empty.
"""

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from queueproxy.breaker import Admission, Breaker

SETTINGS = settings(
    max_examples=150,
    stateful_step_count=40,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)


class BreakerMachine(RuleBasedStateMachine):
    @initialize(depth=st.integers(1, 4), max_concurrency=st.integers(0, 4), data=st.data())
    def build(self, depth: int, max_concurrency: int, data: st.DataObject) -> None:
        initial = data.draw(st.integers(0, max_concurrency), label="initial_capacity")
        self.breaker: Breaker[int] = Breaker(depth, max_concurrency, initial)
        self.depth, self.max_concurrency = depth, max_concurrency
        self.next_ticket = 0
        self.running: list[int | str] = []  # admitted tickets and reservations, not yet released
        self.waiting: list[int] = []  # queued tickets, oldest first
        self.outcome: dict[int, str] = {}  # every answered ticket: admitted | rejected | cancelled

    def _answer(self, ticket: int, outcome: str) -> None:
        assert ticket not in self.outcome, f"ticket {ticket} answered twice: {self.outcome[ticket]}"
        self.outcome[ticket] = outcome

    def _admitted(self, tickets: list[int]) -> None:
        assert tickets == self.waiting[: len(tickets)], "waiters must be admitted first come, first served"
        del self.waiting[: len(tickets)]
        for ticket in tickets:
            self._answer(ticket, "admitted")
            self.running.append(ticket)

    @rule()
    def acquire(self) -> None:
        ticket, self.next_ticket = self.next_ticket, self.next_ticket + 1
        full = self.breaker.in_flight >= self.depth + self.max_concurrency
        result = self.breaker.acquire(ticket)
        if full:
            assert result is Admission.REJECTED
            self._answer(ticket, "rejected")
        elif result is Admission.ADMITTED:
            assert not self.waiting, "a newcomer overtook a waiter"
            self._answer(ticket, "admitted")
            self.running.append(ticket)
        else:
            assert result is Admission.QUEUED
            self.waiting.append(ticket)

    @rule()
    def reserve(self) -> None:
        free = (
            self.breaker.in_flight < self.depth + self.max_concurrency
            and not self.waiting
            and self.breaker.executing < self.breaker.capacity
        )
        assert self.breaker.reserve() is free
        if free:
            self.running.append(f"reservation {len(self.running)}")

    @precondition(lambda self: self.running)
    @rule(data=st.data())
    def release(self, data: st.DataObject) -> None:
        self.running.remove(data.draw(st.sampled_from(self.running), label="finished"))
        self._admitted(self.breaker.release())

    @precondition(lambda self: not self.running)
    @rule()
    def release_without_admission_is_refused(self) -> None:
        before = (self.breaker.in_flight, self.breaker.executing, self.breaker.waiting)
        with pytest.raises(RuntimeError, match="without a matching admission"):
            self.breaker.release()
        assert (self.breaker.in_flight, self.breaker.executing, self.breaker.waiting) == before

    @precondition(lambda self: self.next_ticket)
    @rule(data=st.data())
    def cancel(self, data: st.DataObject) -> None:
        ticket = data.draw(st.integers(0, self.next_ticket - 1), label="ticket")
        waiting = ticket in self.waiting
        assert self.breaker.cancel(ticket) is waiting
        if waiting:
            self.waiting.remove(ticket)
            self._answer(ticket, "cancelled")

    @rule(data=st.data())
    def update_concurrency(self, data: st.DataObject) -> None:
        capacity = data.draw(st.integers(-1, self.max_concurrency + 1), label="capacity")
        if not 0 <= capacity <= self.max_concurrency:
            with pytest.raises(ValueError, match=f"capacity={capacity}"):
                self.breaker.update_concurrency(capacity)
            return
        self._admitted(self.breaker.update_concurrency(capacity))

    @invariant()
    def agrees_with_the_model_and_keeps_the_bounds(self) -> None:
        breaker = self.breaker
        assert breaker.executing == len(self.running)
        assert breaker.waiting == len(self.waiting)
        assert breaker.in_flight == len(self.running) + len(self.waiting)
        assert breaker.in_flight <= self.depth + self.max_concurrency
        assert breaker.executing <= self.max_concurrency
        assert not (self.waiting and breaker.executing < breaker.capacity), "a waiter while a token is free"

    def teardown(self) -> None:
        if not hasattr(self, "breaker"):
            return
        if self.max_concurrency:
            self._admitted(self.breaker.update_concurrency(self.max_concurrency))
        for ticket in list(self.waiting):  # only with max_concurrency 0: nothing can ever run them
            assert self.breaker.cancel(ticket)
            self.waiting.remove(ticket)
            self._answer(ticket, "cancelled")
        while self.running:
            self.running.pop()
            self._admitted(self.breaker.release())
        assert (self.breaker.in_flight, self.breaker.executing, self.breaker.waiting) == (0, 0, 0)
        assert sorted(self.outcome) == list(range(self.next_ticket)), "a ticket was never answered"


TestBreakerProperties = BreakerMachine.TestCase
TestBreakerProperties.settings = SETTINGS
