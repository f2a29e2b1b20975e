"""The queue-proxy's stats in process, on real loopback sockets, in front of a real user container:
the averages and counts it reports to the autoscaler, and the stats port that serves them.
"""

from __future__ import annotations

import asyncio
import math
import time

import httpx
import pytest
from queueproxy_fixtures import run, stack
from waiting import wait_until

pytestmark = pytest.mark.timeout(30)


# -- stats (reference §3.2 examples, scaled down: averages do not depend on the time unit) -------
# Each check bounds the average by what the test saw: a request is in flight at the proxy at least as
# long as the container slept (or was held) and at most from its sending to its answer. A loaded
# machine widens the period and the answer's delay; the bounds follow, so it cannot fail them.
TIMER_SLACK = 0.01  # asyncio may fire a sleep's timer this much early (its clock resolution)


def within(low: float, value: float, high: float) -> None:
    assert low - 1e-9 <= value <= high + 1e-9, f"{value} outside [{low}, {high}]"


@pytest.fixture
def no_background_reports(monkeypatch):
    """The proxy's own once-a-second report would restart the averages mid-test: push it an hour out."""
    monkeypatch.setattr("queueproxy.app.REPORTING_PERIOD", 3600.0)


@pytest.mark.usefixtures("no_background_reports")
def test_stats_one_request_over_half_the_period_averages_half():
    """in@0, out@3000, report@6000 -> average 0.5, count 1 (here in seconds x 0.15)."""

    async def body():
        async with stack() as (_, proxy, _, client):
            t0 = time.monotonic()
            proxy.stats.report(t0)
            await client.get("/sleep?s=0.45")
            answered = time.monotonic()
            await asyncio.sleep(t0 + 0.9 - time.monotonic())
            now = time.monotonic()
            report = proxy.stats.report(now)
            within(
                (0.45 - TIMER_SLACK) / (now - t0), report.average_concurrency, (answered - t0) / (now - t0)
            )
            assert (report.request_count, report.proxied_request_count) == (1, 0)

    run(body)


@pytest.mark.usefixtures("no_background_reports")
def test_stats_overlapping_requests_average_one_and_a_half_with_the_proxied_part_apart():
    """in@0, in@100, out@600, out@1000 -> 1.5 (x 0.4); the second came through the activator."""

    async def body():
        async with stack() as (_, proxy, _, client):

            async def answered_at(path: str, **headers: str) -> float:
                await client.get(path, headers=headers)
                return time.monotonic()

            t0 = time.monotonic()
            proxy.stats.report(t0)
            first = asyncio.ensure_future(answered_at("/sleep?s=0.4"))
            await asyncio.sleep(0.04)
            sent = time.monotonic()
            second = asyncio.ensure_future(answered_at("/sleep?s=0.2", **{"K-Proxy-Request": "activator"}))
            first_done, second_done = await asyncio.gather(first, second)
            now = time.monotonic()
            report = proxy.stats.report(now)
            period = now - t0
            most = (first_done - t0) + (second_done - sent)
            within((0.6 - 2 * TIMER_SLACK) / period, report.average_concurrency, most / period)
            within(
                (0.2 - TIMER_SLACK) / period,
                report.average_proxied_concurrency,
                (second_done - sent) / period,
            )
            assert (report.request_count, report.proxied_request_count) == (2, 1)

    run(body)


@pytest.mark.usefixtures("no_background_reports")
def test_stats_a_request_spanning_two_reports_counts_in_both_averages_but_once_in_counts():
    async def body():
        async with stack() as (user, proxy, _, client):
            t0 = time.monotonic()
            proxy.stats.report(t0)
            request = asyncio.ensure_future(client.get("/gate"))
            await wait_until(lambda: proxy.stats.concurrency == 1, what="the request to reach the proxy")
            arrived_by = time.monotonic()
            await asyncio.sleep(0.3)
            first_at = time.monotonic()
            first = proxy.stats.report(first_at)
            await asyncio.sleep(0.15)
            released = time.monotonic()
            user.gate.set()
            await request
            answered = time.monotonic()
            await asyncio.sleep(max(0.0, released + 0.15 - answered))
            second_at = time.monotonic()
            second = proxy.stats.report(second_at)
            within((first_at - arrived_by) / (first_at - t0), first.average_concurrency, 1.0)  # ~1
            second_period = second_at - first_at
            within(
                (released - first_at) / second_period,
                second.average_concurrency,
                (answered - first_at) / second_period,
            )  # ~0.5
            assert (first.request_count, second.request_count) == (1, 0)

    run(body)


def test_stats_port_serves_the_last_report_as_a_stat_and_only_the_pod_name_before_it():
    async def body():
        async with stack() as (user, proxy, ports, client), httpx.AsyncClient() as scraper:

            async def stat() -> dict:
                return (await scraper.get(f"http://127.0.0.1:{ports['stats_port']}/stats")).json()

            assert await stat() == {  # the first report comes 1 s after the start
                "pod_name": "test-pod",
                "average_concurrent_requests": 0.0,
                "average_proxied_concurrent_requests": 0.0,
                "request_count": 0.0,
                "proxied_request_count": 0.0,
                "process_uptime": 0.0,
                "timestamp": 0.0,
            }
            held = asyncio.ensure_future(client.get("/gate"))  # in flight until the gate opens
            await wait_until(lambda: proxy.stats.concurrency == 1, what="the request to reach the proxy")
            # Reports fall on whole seconds of uptime; the second one after the arrival is a full
            # period with the request in flight.
            full_from = math.ceil(time.monotonic() - proxy.started_at) + 1
            latest: dict = {}

            async def full_period_reported() -> bool:
                latest.update(await stat())
                return latest["process_uptime"] >= full_from

            await wait_until(full_period_reported, 10, f"a report at {full_from} s of uptime", 0.05)
            user.gate.set()
            await held
        assert latest["pod_name"] == "test-pod"
        assert latest["average_concurrent_requests"] == pytest.approx(1.0, abs=1e-6)
        assert latest["request_count"] == 0.0  # it arrived in an earlier period
        assert latest["process_uptime"] == pytest.approx(round(latest["process_uptime"]), abs=0.3)
        assert abs(latest["timestamp"] - time.time()) < 2.0

    run(body)
