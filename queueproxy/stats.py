"""Time-weighted request statistics, as Knative's networking ``RequestStats`` keeps them.

Pure: every event and every report carries ``now`` (seconds) from the caller. The queue-proxy
reports once a second; the activator keeps one per revision, counting time spent queued too.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class StatsReport:
    average_concurrency: float
    average_proxied_concurrency: float
    request_count: float
    proxied_request_count: float


@dataclass(slots=True)
class RequestStats:
    """Integrates in-flight counts over time between reports.

    ``proxied`` requests (``K-Proxy-Request: activator``) count toward the totals and are also
    tracked apart, so the autoscaler can subtract what the activator already reported.
    """

    now: float
    concurrency: int = field(init=False, default=0)
    proxied_concurrency: int = field(init=False, default=0)
    _last_change: float = field(init=False)
    _seconds_in_use: float = field(init=False, default=0.0)
    _integral: float = field(init=False, default=0.0)
    _proxied_integral: float = field(init=False, default=0.0)
    _request_count: int = field(init=False, default=0)
    _proxied_count: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        self._last_change = self.now

    def _advance(self, now: float) -> None:
        dt = now - self._last_change
        if dt > 0:
            self._seconds_in_use += dt
            self._integral += self.concurrency * dt
            self._proxied_integral += self.proxied_concurrency * dt
            self._last_change = now

    def request_in(self, now: float, proxied: bool = False) -> None:
        self._advance(now)
        self.concurrency += 1
        self._request_count += 1
        if proxied:
            self.proxied_concurrency += 1
            self._proxied_count += 1

    def request_out(self, now: float, proxied: bool = False) -> None:
        self._advance(now)
        self.concurrency -= 1
        if proxied:
            self.proxied_concurrency -= 1

    def report(self, now: float) -> StatsReport:
        """Averages and counts since the previous report; integrals and counts restart, in-flight stays."""
        self._advance(now)
        if self._seconds_in_use > 0:
            avg = self._integral / self._seconds_in_use
            proxied_avg = self._proxied_integral / self._seconds_in_use
        else:
            avg = proxied_avg = 0.0
        result = StatsReport(avg, proxied_avg, float(self._request_count), float(self._proxied_count))
        self._seconds_in_use = self._integral = self._proxied_integral = 0.0
        self._request_count = self._proxied_count = 0
        return result
