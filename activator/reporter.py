"""The activator's concurrency reporter: what it tells the autoscaler about each revision.

It keeps one ``RequestStats`` per revision for every request it handles, from arrival to the last
byte, so time spent held while the revision has no capacity counts as concurrency — that is what
makes the autoscaler scale a revision at zero. The first request for a revision nobody is tracking
produces a stat *at once* (concurrency 1, one request): the scale-from-zero signal, which lets the
autoscaler decide without waiting for the next tick. That request is then subtracted from the next
periodic report, so it is not counted twice in the window (Knative's concurrency_reporter.go).

Pure: ``now`` comes from the caller; the shell calls ``report`` every second and ships the stats.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from autoscaler.stat import Stat
from queueproxy.stats import RequestStats

K = TypeVar("K", bound=Hashable)


@dataclass
class _Tracked:
    stats: RequestStats
    refs: int = 0  # requests in progress
    first_request: int = 0  # 1 until the periodic report that corrects the immediate stat


@dataclass
class ConcurrencyReporter(Generic[K]):
    pod_name: str
    _tracked: dict[K, _Tracked] = field(init=False, default_factory=dict)

    def request_in(self, key: K, now: float) -> Stat | None:
        """Count a request arriving; returns the immediate stat if ``key`` was not being tracked."""
        tracked = self._tracked.get(key)
        immediate = None
        if tracked is None:
            tracked = self._tracked[key] = _Tracked(RequestStats(now), first_request=1)
            immediate = Stat(pod_name=self.pod_name, average_concurrent_requests=1.0, request_count=1.0)
        tracked.stats.request_in(now)
        tracked.refs += 1
        return immediate

    def request_out(self, key: K, now: float) -> None:
        tracked = self._tracked[key]
        tracked.stats.request_out(now)
        tracked.refs -= 1

    def report(self, now: float) -> list[tuple[K, Stat]]:
        """One stat per tracked revision for the period since the last report.

        A revision with no request in flight and zero average concurrency is forgotten after this
        report, so its next request is again reported at once.
        """
        stats: list[tuple[K, Stat]] = []
        for key, tracked in list(self._tracked.items()):
            period = tracked.stats.report(now)
            correction = tracked.first_request
            tracked.first_request = 0
            if period.average_concurrency == 0 and tracked.refs == 0:
                del self._tracked[key]
            stats.append(
                (
                    key,
                    Stat(
                        pod_name=self.pod_name,
                        average_concurrent_requests=max(period.average_concurrency - correction, 0.0),
                        request_count=max(period.request_count - correction, 0.0),
                    ),
                )
            )
        return stats

    def tracked(self) -> list[K]:
        return list(self._tracked)
