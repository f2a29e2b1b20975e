"""The live autoscaler service follows autoscaler.schedule: a pushed stat decides at once, pods changing
reconcile without deciding, and nothing else runs the decider between its ticks.

No sockets: a fake actuator stands in for the backend and the decision interval is set far beyond
the test's deadlines, so any decision seen here was a poke's, not a tick's.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

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


async def wait_until(predicate, timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.005)


def count_decisions(service: AutoscalerService) -> dict[str, int]:
    """Wrap ``decide_now`` to count decider runs and reconcile-only runs."""
    counts = {"decide": 0, "reconcile": 0}
    decide_now = service.decide_now

    def counted(ref, *, scale=True):
        counts["decide" if scale else "reconcile"] += 1
        return decide_now(ref, scale=scale)

    service.decide_now = counted  # type: ignore[method-assign]
    return counts


def start_service(actuator: FakeActuator) -> AutoscalerService:
    annotations = {
        "autoscaling.knative.dev/initial-scale": "0",
        "autoscaling.knative.dev/target-burst-capacity": "0",  # serve as soon as a pod is ready
    }
    settings = settings_from(annotations, {"allow-zero-initial-scale": "true"})
    service = AutoscalerService(actuator, decide_interval=NEVER)
    service.add_revision(KEY, settings)
    return service


def test_a_pushed_stat_for_a_revision_at_zero_decides_at_once():
    async def body():
        actuator = FakeActuator()
        service = start_service(actuator)
        counts = count_decisions(service)
        await service.start()
        try:
            service.record_pushed([(KEY, Stat("activator", average_concurrent_requests=1.0))])
            await wait_until(lambda: actuator.asked)
            assert actuator.asked == [1] and counts == {"decide": 1, "reconcile": 0}
            assert service.mode(KEY) == "proxy"  # no pod is ready yet
        finally:
            await service.close()

    asyncio.run(body())


def test_a_pushed_stat_without_concurrency_waits_for_the_tick():
    async def body():
        actuator = FakeActuator()
        service = start_service(actuator)
        counts = count_decisions(service)
        await service.start()
        try:
            service.record_pushed([(KEY, Stat("activator", average_concurrent_requests=0.0))])
            await asyncio.sleep(0.2)  # a negative check: nothing may happen in this time
            assert counts == {"decide": 0, "reconcile": 0}
        finally:
            await service.close()

    asyncio.run(body())


def test_a_pod_change_reconciles_without_running_the_decider():
    async def body():
        actuator = FakeActuator()
        service = start_service(actuator)
        counts = count_decisions(service)
        await service.start()
        try:
            service.record_pushed([(KEY, Stat("activator", average_concurrent_requests=1.0))])
            await wait_until(lambda: counts["decide"] == 1)
            pod = PodInfo("hello-1", KEY, "127.0.0.1:9", "http://127.0.0.1:9/stats", 0.0, True)
            actuator.current = [pod]
            for listener in actuator.listeners:
                listener(KEY, actuator.current)
            await wait_until(lambda: service.mode(KEY) == "serve")
            assert counts == {"decide": 1, "reconcile": 1}
        finally:
            await service.close()

    asyncio.run(body())
