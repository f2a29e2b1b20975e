"""The live autoscaler service's set of revisions changes while it runs, as the Kubernetes controller
needs: a workload enrolled late is added, new settings apply in place, a removed one stops at once.

No sockets: a fake actuator with no pods stands in for the backend.
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


class NoPods:
    def __init__(self) -> None:
        self.asked: list[int] = []

    def set_desired_scale(self, revision: RevisionKey, desired: int) -> None:
        self.asked.append(desired)

    def desired_scale(self, revision: RevisionKey) -> int:
        return self.asked[-1] if self.asked else 0

    def pods(self, revision: RevisionKey) -> Sequence[PodInfo]:
        return []

    def subscribe(self, listener: PodsListener) -> None:
        pass


def test_new_settings_apply_in_place_without_restarting_the_loops():
    async def body() -> None:
        service = AutoscalerService(NoPods())
        service.add_revision(KEY, settings_from({"autoscaling.knative.dev/target": "10"}))
        await service.start()
        try:
            tasks = list(service._revisions[KEY].tasks)
            service.add_revision(KEY, settings_from({"autoscaling.knative.dev/target": "50"}))
            assert service.settings(KEY).spec.target_value == 50 * 0.7
            assert service._revisions[KEY].tasks == tasks and not any(t.done() for t in tasks)
        finally:
            await service.close()

    asyncio.run(body())


def test_a_removed_revision_stops_its_loops_and_rejects_stats_then_can_come_back():
    async def body() -> None:
        modes: list[tuple[RevisionKey, str]] = []
        service = AutoscalerService(NoPods())
        service.on_mode_change(lambda ref, mode: modes.append((ref, mode)))
        await service.start()
        try:
            service.add_revision(KEY, settings_from())
            tasks = list(service._revisions[KEY].tasks)
            service.remove_revision(KEY)
            await asyncio.gather(*tasks, return_exceptions=True)
            assert all(t.cancelled() for t in tasks)
            assert service.revisions() == []
            service.record_pushed([(KEY, Stat("activator", average_concurrent_requests=1.0))])
            assert service.stats_rejected == 1
            service.remove_revision(KEY)  # removing twice is harmless
            service.add_revision(KEY, settings_from())
            assert service.revisions() == [KEY]
            assert modes == [(KEY, "proxy"), (KEY, "proxy")]  # a fresh start tells the mode again
        finally:
            await service.close()

    asyncio.run(body())
