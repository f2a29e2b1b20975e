"""Stat collection for one revision: the four windows the decider reads, and the scraper's arithmetic.

A model of knative/serving ``pkg/autoscaler/metrics`` (``collector.go``, ``stats_scraper.go``,
``sample_size.go``):

* :class:`MetricCollection` keeps concurrency and requests-per-second, each in a stable and a panic
  window. Every stat lands in all four; stats of the same second add up to the revision total.
* :func:`sample_size`, :func:`scrape_order` and :func:`extrapolate` are how the scraper picks a sample of
  pods and turns their stats into one revision-wide stat named ``service-scraper``.

The HTTP scraping itself belongs to the service shell; everything here is pure.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

from autoscaler.aggregation import BucketWindow, WeightedBucketWindow
from autoscaler.config import LINEAR, WEIGHTED_EXPONENTIAL
from autoscaler.stat import Stat

__all__ = [
    "SCRAPER_POD_NAME",
    "MetricCollection",
    "NoDataError",
    "ScrapePod",
    "extrapolate",
    "sample_size",
    "scrape_order",
]

SCRAPER_POD_NAME = "service-scraper"
# Sample size for a 95 % confidence interval with a 5 % margin of error: 1.96² · 100 / 5².
_SAMPLE_CONSTANT = 1.96**2 * 100 / 5**2


class NoDataError(LookupError):
    """The revision's windows hold no data yet and it has a scrape target, so no decision can be made."""


def _window(window: float, aggregation: str) -> BucketWindow:
    if aggregation == WEIGHTED_EXPONENTIAL:
        return WeightedBucketWindow(window)
    if aggregation == LINEAR:
        return BucketWindow(window)
    raise ValueError(f"aggregation={aggregation!r}: must be {LINEAR!r} or {WEIGHTED_EXPONENTIAL!r}")


class MetricCollection:
    """Concurrency and RPS of one revision over its stable and panic windows.

    ``has_scrape_target`` is False when target-burst-capacity is -1: pods are then not scraped and only
    activator stats arrive, so an empty window is a valid zero rather than "no data yet".
    """

    __slots__ = (
        "_aggregation",
        "_concurrency_panic",
        "_concurrency_stable",
        "_has_scrape_target",
        "_rps_panic",
        "_rps_stable",
    )

    def __init__(
        self,
        stable_window: float,
        panic_window: float,
        aggregation: str = LINEAR,
        has_scrape_target: bool = True,
    ) -> None:
        self._has_scrape_target = has_scrape_target
        self._build(stable_window, panic_window, aggregation)

    def _build(self, stable_window: float, panic_window: float, aggregation: str) -> None:
        self._aggregation = aggregation
        self._concurrency_stable = _window(stable_window, aggregation)
        self._concurrency_panic = _window(panic_window, aggregation)
        self._rps_stable = _window(stable_window, aggregation)
        self._rps_panic = _window(panic_window, aggregation)

    @property
    def stable_window(self) -> float:
        return self._concurrency_stable.window

    @property
    def panic_window(self) -> float:
        return self._concurrency_panic.window

    def record(self, stat: Stat, now: float) -> None:
        """Record one stat at ``now``; proxied requests are left out (the activator reports them)."""
        bucket = math.floor(now)
        concurrency = stat.average_concurrent_requests - stat.average_proxied_concurrent_requests
        rps = stat.request_count - stat.proxied_request_count
        self._concurrency_stable.record_bucket(bucket, concurrency)
        self._concurrency_panic.record_bucket(bucket, concurrency)
        self._rps_stable.record_bucket(bucket, rps)
        self._rps_panic.record_bucket(bucket, rps)

    def stable_and_panic_concurrency(self, now: float) -> tuple[float, float]:
        """Revision-wide average concurrency over the stable and the panic window."""
        return self._read(self._concurrency_stable, self._concurrency_panic, now)

    def stable_and_panic_rps(self, now: float) -> tuple[float, float]:
        """Revision-wide requests per second over the stable and the panic window."""
        return self._read(self._rps_stable, self._rps_panic, now)

    def _read(self, stable: BucketWindow, panic: BucketWindow, now: float) -> tuple[float, float]:
        if stable.is_empty(now):
            if self._has_scrape_target:
                raise NoDataError(f"no stats within the {stable.window:g}s stable window")
            return 0.0, 0.0
        return stable.average(now), panic.average(now)

    def update(
        self,
        stable_window: float,
        panic_window: float,
        aggregation: str,
        has_scrape_target: bool,
        now: float,
    ) -> None:
        """Apply a changed Metric: resize the windows in place, keeping their newest data.

        A change of aggregation algorithm starts fresh windows (the two kinds read the ring differently).
        """
        self._has_scrape_target = has_scrape_target
        if aggregation != self._aggregation:
            self._build(stable_window, panic_window, aggregation)
            return
        for window in (self._concurrency_stable, self._rps_stable):
            window.resize(stable_window, now)
        for window in (self._concurrency_panic, self._rps_panic):
            window.resize(panic_window, now)


def sample_size(pods: int) -> int:
    """How many of ``pods`` to scrape: all of up to 3, then ``ceil(N·X / (N + X − 1))`` (about 16 max)."""
    if pods <= 3:
        return max(pods, 0)
    return math.ceil(pods * _SAMPLE_CONSTANT / (pods + _SAMPLE_CONSTANT - 1))


@dataclass(frozen=True, slots=True)
class ScrapePod:
    """A ready pod as the scraper sees it: its name and when it started (seconds)."""

    name: str
    start_time: float


def scrape_order(
    pods: Sequence[ScrapePod], stable_window: float, now: float, rng: random.Random
) -> list[str]:
    """The order in which to try pods, so that the first :func:`sample_size` successes make the sample.

    Pods at least a stable window old come first: their stats cover the whole window. If there are
    enough of them to fill the sample they are shuffled; otherwise all of them are used and the young
    pods, shuffled, fill the rest.
    """
    old = [p.name for p in pods if now - p.start_time >= stable_window]
    young = [p.name for p in pods if now - p.start_time < stable_window]
    if len(old) >= sample_size(len(pods)):
        rng.shuffle(old)
    else:
        rng.shuffle(young)
    return old + young


def extrapolate(stats: Sequence[Stat], ready_pods: int) -> Stat:
    """Scale a sample of pod stats up to the revision: each field summed, ``/ len(stats) * ready_pods``."""
    if not stats:
        raise ValueError("extrapolate needs at least one sampled stat")
    sampled = len(stats)

    def scaled(values: list[float]) -> float:
        return sum(values) / sampled * ready_pods

    return Stat(
        pod_name=SCRAPER_POD_NAME,
        average_concurrent_requests=scaled([s.average_concurrent_requests for s in stats]),
        average_proxied_concurrent_requests=scaled([s.average_proxied_concurrent_requests for s in stats]),
        request_count=scaled([s.request_count for s in stats]),
        proxied_request_count=scaled([s.proxied_request_count for s in stats]),
    )
