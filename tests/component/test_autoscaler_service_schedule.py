"""The live autoscaler service follows autoscaler.schedule: a pushed stat decides at once, pods changing
reconcile without deciding, and nothing else runs the decider between its ticks.

No sockets: a fake actuator stands in for the backend and the decision interval is set far beyond
the test's deadlines, so any decision seen here was a poke's, not a tick's.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence

import pytest
import uvloop
from waiting import wait_until

from autoscaler.actuator import PodInfo, PodsListener
from autoscaler.revision import settings_from
from autoscaler.service import AutoscalerService
from autoscaler.stat import RevisionKey, Stat

pytestmark = pytest.mark.timeout(30)

KEY = RevisionKey("default", "hello")
NEVER = 3600.0  # a decision interval no test waits for


class FakeActuator:
    """Records the scales asked for; has no pods until a test adds one."""

    def __init__(self) -> None:
        self.asked: list[int] = []
        self.listeners: list[PodsListener] = []
        self.current: list[PodInfo] = []

    def set_desired_scale(self, revision: RevisionKey, desired: int) -> None:
        self.asked.append(desired)

    def desired_scale(self, revision: RevisionKey) -> int:
        return self.asked[-1] if self.asked else 0

    def pods(self, revision: RevisionKey) -> Sequence[PodInfo]:
        return self.current

    def subscribe(self, listener: PodsListener) -> None:
        self.listeners.append(listener)


class Running:
    """A started service for one revision at zero, its fake actuator, and counts of its decisions."""

    def __init__(self) -> None:
        annotations = {
            "autoscaling.knative.dev/initial-scale": "0",
            "autoscaling.knative.dev/target-burst-capacity": "0",  # serve as soon as a pod is ready
        }
        self.actuator = FakeActuator()
        self.service = AutoscalerService(self.actuator, decide_interval=NEVER)
        self.service.add_revision(KEY, settings_from(annotations, {"allow-zero-initial-scale": "true"}))
        self.counts = {"decide": 0, "reconcile": 0}
        decide_now = self.service.decide_now

        def counted(ref, *, scale=True):
            self.counts["decide" if scale else "reconcile"] += 1
            return decide_now(ref, scale=scale)

        self.service.decide_now = counted  # type: ignore[method-assign]

    def push(self, concurrency: float) -> None:
        self.service.record_pushed([(KEY, Stat("activator", average_concurrent_requests=concurrency))])


def run(test: Callable[[Running], Awaitable[None]]) -> None:
    async def body() -> None:
        running = Running()
        await running.service.start()
        try:
            await test(running)
        finally:
            await running.service.close()

    asyncio.run(body())


def test_a_pushed_stat_for_a_revision_at_zero_decides_at_once():
    async def test(running: Running) -> None:
        running.push(1.0)
        await wait_until(lambda: running.actuator.asked)
        assert running.actuator.asked == [1] and running.counts == {"decide": 1, "reconcile": 0}
        assert running.service.mode(KEY) == "proxy"  # no pod is ready yet

    run(test)


def test_a_pushed_stat_without_concurrency_waits_for_the_tick():
    async def test(running: Running) -> None:
        running.push(0.0)
        await asyncio.sleep(0.2)  # a negative check: nothing may happen in this time
        assert running.counts == {"decide": 0, "reconcile": 0}

    run(test)


def test_a_pod_change_reconciles_without_running_the_decider():
    async def test(running: Running) -> None:
        running.push(1.0)
        await wait_until(lambda: running.counts["decide"] == 1)
        actuator = running.actuator
        actuator.current = [PodInfo("hello-1", KEY, "127.0.0.1:9", "http://127.0.0.1:9/stats", 0.0, True)]
        for listener in actuator.listeners:
            listener(KEY, actuator.current)
        await wait_until(lambda: running.service.mode(KEY) == "serve")
        assert running.counts == {"decide": 1, "reconcile": 1}

    run(test)


@pytest.mark.parametrize(
    "loop_factory", [asyncio.new_event_loop, uvloop.new_event_loop], ids=["asyncio", "uvloop"]
)
def test_close_ends_the_loops_even_when_a_poke_arrives_in_the_same_step(loop_factory):
    """A pod change pokes the decide loop as the stack stops. Python 3.11's wait_for, cancelled in the
    step its inner wait finished, returned the result instead of raising: the loop went on deciding and
    close() waited for it forever (a local-stack test hung in CI)."""

    async def body() -> None:
        for _ in range(20):
            running = Running()
            await running.service.start()
            await asyncio.sleep(0.01)  # the loops are waiting for a poke or their tick
            for listener in running.actuator.listeners:
                listener(KEY, [])  # the poke: its wait completes in the next step...
            async with asyncio.timeout(2):
                await running.service.close()  # ...the same step as the loops' cancellation

    runner = asyncio.Runner(loop_factory=loop_factory)
    with runner:
        runner.run(body())
