"""A controller that becomes leader again starts its revisions in panic, as Knative's restarted
autoscaler does: closed and started again, the service decides afresh, with empty windows, and holds
a revision's ready pods for one stable window instead of reading the gap in its stats as idleness.

No sockets: a fake actuator reports four ready pods, the clock is the test's, and decisions are
taken with ``decide_now`` (the service's own loops sleep through the test).
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

KEY = RevisionKey("ns", "r")
READY = 4
STABLE_WINDOW = 60.0


class FourReadyPods:
    def __init__(self) -> None:
        self.asked: list[int] = []

    def set_desired_scale(self, revision: RevisionKey, desired: int) -> None:
        self.asked.append(desired)

    def desired_scale(self, revision: RevisionKey) -> int:
        return self.asked[-1] if self.asked else READY

    def pods(self, revision: RevisionKey) -> Sequence[PodInfo]:
        return [
            PodInfo(f"p{i}", revision, f"127.0.0.1:{i}", f"http://127.0.0.1:{i}/stats", 0.0, True)
            for i in range(READY)
        ]

    def subscribe(self, listener: PodsListener) -> None:
        pass


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def quiet_seconds(service: AutoscalerService, clock: Clock, seconds: int) -> None:
    """One pushed stat a second of almost no load (one pod's worth would be plenty)."""
    for _ in range(seconds):
        clock.now += 1.0
        service.record_pushed([(KEY, Stat("activator", average_concurrent_requests=1.0))])


def test_a_restarted_service_starts_its_revisions_in_panic_and_holds_their_pods_for_a_stable_window():
    async def body() -> None:
        clock = Clock()
        service = AutoscalerService(FourReadyPods(), clock=clock, scrape_interval=1e6, decide_interval=1e6)
        service.add_revision(KEY, settings_from())
        await service.start()  # first term: four pods ready, so it starts in panic
        assert service.status()[0].panicking
        quiet_seconds(service, clock, int(STABLE_WINDOW) + 10)
        first_term = service.decide_now(KEY)
        assert (first_term.panicking, first_term.desired_pods) == (False, READY // 2)  # scaled down
        await service.close()  # leadership lost

        clock.now += 300.0  # another replica led for five minutes
        await service.start()  # leadership won back
        try:
            assert service.status()[0].panicking
            quiet_seconds(service, clock, 5)
            again = service.decide_now(KEY)
            assert (again.panicking, again.desired_pods) == (True, READY)  # no scale-down ...
            quiet_seconds(service, clock, int(STABLE_WINDOW) - 10)
            assert service.decide_now(KEY).desired_pods == READY  # ... for a whole stable window
            quiet_seconds(service, clock, 10)
            after = service.decide_now(KEY)
            assert (after.panicking, after.desired_pods) == (False, READY // 2)
        finally:
            await service.close()

    asyncio.run(body())
