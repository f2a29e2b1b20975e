"""The queue-proxy in process, on real loopback sockets, in front of a real user container."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import time
from collections.abc import AsyncIterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from queueproxy_fixtures import UserContainer, free_port, run, running_queue_proxy, wait_ready
from waiting import wait_until

from queueproxy.app import QueueProxy
from queueproxy.config import ProbeSpec

pytestmark = pytest.mark.timeout(30)


def client_for(port: int) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{port}", timeout=10.0, limits=httpx.Limits(max_connections=500)
    )


Stack = tuple[UserContainer, QueueProxy, dict[str, int], httpx.AsyncClient]


@contextlib.asynccontextmanager
async def stack(**changes) -> AsyncIterator[Stack]:
    """A ready queue-proxy in front of a user container, and a client; all stopped however the test ends."""
    async with (
        UserContainer() as user,
        running_queue_proxy(user.port, **changes) as (proxy, ports),
        client_for(ports["serving_port"]) as client,
    ):
        await wait_ready(proxy)
        yield user, proxy, ports, client


async def settled(breaker) -> tuple[int, int, int]:
    """The breaker once the proxy's bookkeeping caught up (it runs just after the response is sent)."""
    await wait_until(lambda: breaker.in_flight == 0, what="the breaker to release every slot")
    return breaker.in_flight, breaker.executing, breaker.waiting


# -- breaker -------------------------------------------------------------------------------------
def test_concurrency_at_the_user_container_never_exceeds_cc_under_ten_times_cc_clients():
    async def body():
        cc = 4
        async with stack(container_concurrency=cc) as (user, proxy, _, client):
            answers = await asyncio.gather(*(client.get("/sleep?s=0.05") for _ in range(10 * cc)))
            assert [a.status_code for a in answers] == [200] * (10 * cc)
            assert user.max_in_flight == cc
            assert await settled(proxy.handler.breaker) == (0, 0, 0)

    run(body)


@pytest.mark.parametrize(
    ("cc", "depth", "admitted", "message"),
    [
        (2, 0, 22, b"pending request queue full: containerConcurrency=2, queue depth=20\n"),  # 11 x cc
        (1, 2, 3, b"pending request queue full: containerConcurrency=1, queue depth=2\n"),
    ],
    ids=["default-depth-10cc", "configured-depth"],
)
def test_the_request_past_cc_plus_queue_depth_gets_503_at_once(cc, depth, admitted, message):
    async def body():
        async with stack(container_concurrency=cc, queue_depth=depth) as (user, proxy, ports, client):
            held = [asyncio.ensure_future(client.get("/gate")) for _ in range(admitted)]
            breaker = proxy.handler.breaker
            await wait_until(lambda: breaker.in_flight == admitted, what=f"{admitted} requests admitted")
            began = time.monotonic()
            rejected = await client.get("/gate")
            assert time.monotonic() - began < 0.2
            assert rejected.status_code == 503
            assert rejected.content == message
            user.gate.set()
            assert [r.status_code for r in await asyncio.gather(*held)] == [200] * admitted
            assert user.max_in_flight == cc
            async with httpx.AsyncClient() as scraper:
                metrics = (await scraper.get(f"http://127.0.0.1:{ports['metrics_port']}/metrics")).text
            counts = {
                (s.name, s.labels.get("response_code")): s.value
                for family in text_string_to_metric_families(metrics)
                for s in family.samples
            }
            assert counts["queue_rejected_requests_total", None] == 1
            assert counts["revision_request_count_total", "200"] == admitted
            assert counts["revision_request_count_total", "503"] == 1

    run(body)


def test_without_container_concurrency_there_is_no_breaker():
    async def body():
        async with stack(container_concurrency=0) as (user, proxy, _, client):
            assert proxy.handler.breaker is None
            answers = await asyncio.gather(*(client.get("/sleep?s=0.1") for _ in range(60)))
            assert {a.status_code for a in answers} == {200}
            assert user.max_in_flight == 60

    run(body)


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


# -- probes --------------------------------------------------------------------------------------
def test_queue_probe_fails_until_the_user_container_listens_then_passes_within_a_few_probe_periods():
    async def body():
        user_port = free_port()
        async with running_queue_proxy(user_port) as (_, ports), client_for(ports["serving_port"]) as client:
            probe = {"K-Network-Probe": "queue", "User-Agent": "kube-probe/1.31"}
            not_ready = await client.get("/", headers=probe)
            assert not_ready.status_code == 503
            assert b"user container not ready" in not_ready.content
            async with UserContainer(user_port) as user:
                began = time.monotonic()

                async def answered_ready() -> bool:
                    return (await client.get("/", headers=probe)).status_code == 200

                await wait_until(answered_ready, 5, "the queue probe to pass")
                assert time.monotonic() - began < 0.5  # aggressive probing: every 50 ms
                assert (await client.get("/", headers=probe)).content == b"queue"
                assert user.served == 0  # the TCP probe opened connections; no request reached it

    run(body)


def test_probe_of_a_cold_pod_is_held_and_answered_the_moment_the_container_listens():
    async def body():
        user_port = free_port()
        async with running_queue_proxy(user_port) as (_, ports), client_for(ports["serving_port"]) as client:
            probe = {"K-Network-Probe": "queue", "User-Agent": "Knative-Activator-Probe"}
            began = time.monotonic()
            held = asyncio.ensure_future(client.get("/", headers=probe))
            # Nothing outside shows the probe held: a head start lets it arrive before the container
            # listens. Were it late, it would be answered at once, which the bounds below accept too.
            await asyncio.sleep(0.05)
            async with UserContainer(user_port):
                started = time.monotonic()
                answer = await held
                assert (answer.status_code, answer.content) == (200, b"queue")
                assert time.monotonic() - started < 0.15  # one aggressive probe interval, not a new tick
                assert time.monotonic() - began < 0.3  # within the hold: the activator's 300 ms timeout

    run(body)


def test_http_readiness_probe_counts_2xx_and_3xx_as_ready():
    async def body():
        async with UserContainer() as user:
            probe = ProbeSpec(kind="http", host="127.0.0.1", port=user.port, path="/ready")
            async with (
                running_queue_proxy(user.port, probes=(probe,)) as (proxy, ports),
                client_for(ports["serving_port"]) as client,
            ):

                async def probe_says(text: bytes) -> bool:
                    answer = await client.get("/", headers={"K-Network-Probe": "queue"})
                    return answer.status_code == 503 and text in answer.content

                await wait_until(lambda: probe_says(b"/ready answered 503"), what="the HTTP probe's 503")
                user.ready_status = 302
                began = time.monotonic()
                await wait_ready(proxy, timeout=2)
                assert time.monotonic() - began < 0.5
                assert (await client.get("/", headers={"K-Network-Probe": "queue"})).status_code == 200
                probe_headers = next(
                    h for h in user.seen_headers if h.get("user-agent", "").startswith("kube-probe/")
                )
                assert "k-network-probe" not in probe_headers

    run(body)


@pytest.mark.parametrize(
    ("headers", "status", "body_bytes"),
    [
        ({"K-Network-Probe": "queue"}, 200, b"queue"),
        ({"User-Agent": "kube-probe/1.31", "K-Network-Probe": "queue"}, 200, b"queue"),
        ({"User-Agent": "kube-probe/1.31"}, 400, b"unexpected probe header value: \n"),
        (
            {"K-Kubelet-Probe": "1", "K-Network-Probe": "activator"},
            400,
            b"unexpected probe header value: activator\n",
        ),
        ({"User-Agent": "Knative-Activator-Probe", "K-Network-Probe": "queue"}, 200, b"queue"),
        ({"K-Network-Probe": "probe", "K-Network-Hash": "h123"}, 200, b""),
        (
            {"K-Network-Probe": "probe"},
            400,
            b'a probe request must contain a non-empty "K-Network-Hash" header\n',
        ),
    ],
    ids=[
        "queue",
        "kubelet-queue",
        "kubelet-no-value",
        "legacy-kubelet-wrong-value",
        "activator",
        "probe",
        "no-hash",
    ],
)
def test_probe_answers_never_reach_the_user_container_or_the_stats(headers, status, body_bytes):
    async def body():
        async with stack() as (user, proxy, _, client):
            proxy.stats.report(time.monotonic())
            answer = await client.get("/", headers=headers)
            assert (answer.status_code, answer.content) == (status, body_bytes)
            if "K-Network-Hash" in headers:
                assert answer.headers["K-Network-Hash"] == headers["K-Network-Hash"]
            assert user.served == 0
            assert proxy.stats.report(time.monotonic()).request_count == 0

    run(body)


def test_while_draining_probes_fail_but_traffic_is_still_served():
    async def body():
        async with stack() as (_, proxy, _, client):
            proxy.drain.start()
            probe = await client.get("/", headers={"K-Network-Probe": "queue"})
            assert (probe.status_code, probe.content) == (503, b"shutting down\n")
            assert (await client.get("/")).status_code == 200

    run(body)


# -- timeouts and failures -----------------------------------------------------------------------
@pytest.mark.parametrize("warm", [False, True], ids=["new-connection", "pooled-connection"])
@pytest.mark.parametrize(
    "changes",
    [{"revision_timeout": 0.3}, {"response_start_timeout": 0.3}, {"idle_timeout": 0.3}],
    ids=["revision", "response-start", "idle-before-any-byte"],
)
def test_timeouts_before_the_response_starts_give_504(changes, warm):
    """Both paths: a coroutine when a connection must be made, none when a pooled one is free."""

    async def body():
        async with stack(**changes) as (_, proxy, _, client):
            if warm:
                assert (await client.get("/")).status_code == 200
                assert proxy.pool.idle_connections == 1
            began = time.monotonic()
            answer = await client.get("/sleep?s=3")
            assert time.monotonic() - began == pytest.approx(0.3, abs=0.15)
            assert (answer.status_code, answer.content) == (504, b"request timeout\n")
            assert (await client.get("/")).status_code == 200  # the proxy is fine afterwards
            assert not proxy.handler.timeouts.active

    run(body)


@pytest.mark.parametrize("warm", [False, True], ids=["new-connection", "pooled-connection"])
def test_idle_timeout_cuts_a_stalled_streaming_response_but_not_a_steady_one(warm):
    async def body():
        async with stack(idle_timeout=0.25) as (_, proxy, _, client):
            steady = await client.get("/stream?n=5&gap=0.1")
            assert steady.status_code == 200 and steady.text.count("part") == 5
            if not warm:
                proxy.pool.close()
            with pytest.raises(httpx.RemoteProtocolError):
                await client.get("/stream?n=3&gap=1.0")

    run(body)


def test_requests_timing_out_while_holding_or_awaiting_a_breaker_slot_get_504_and_leak_nothing():
    async def body():
        async with stack(container_concurrency=1, revision_timeout=0.4) as (user, proxy, _, client):
            # All queue behind the first; each times out either queued or just after getting the slot.
            stuck = [client.get("/sleep?s=2") for _ in range(4)]
            answers = await asyncio.gather(*stuck)
            assert [a.status_code for a in answers] == [504] * 4
            assert all(a.content == b"request timeout\n" for a in answers)
            assert user.max_in_flight == 1
            assert await settled(proxy.handler.breaker) == (0, 0, 0)
            assert (await client.get("/sleep?s=0.01")).status_code == 200  # no slot leaked

    run(body)


def test_a_client_leaving_while_queued_gives_its_place_back():
    async def body():
        async with stack(container_concurrency=1) as (user, proxy, ports, client):
            holder = asyncio.ensure_future(client.get("/gate"))  # holds the only slot until released
            breaker = proxy.handler.breaker
            await wait_until(lambda: breaker.executing == 1, what="the holder to take the slot")
            _, writer = await asyncio.open_connection("127.0.0.1", ports["serving_port"])
            writer.write(b"GET /sleep?s=0.01 HTTP/1.1\r\nHost: a\r\n\r\n")
            await wait_until(lambda: breaker.waiting == 1, what="the second request to queue")
            writer.transport.abort()  # the queued client goes away
            await wait_until(lambda: breaker.waiting == 0, what="the departed request to leave the queue")
            user.gate.set()
            assert (await holder).status_code == 200
            assert await settled(breaker) == (0, 0, 0)
            assert len(user.seen_headers) == 1  # the departed request never reached the user container

    run(body)


def test_unreachable_user_container_gives_502_naming_it():
    async def body():
        port = free_port()
        async with running_queue_proxy(port) as (_, ports), client_for(ports["serving_port"]) as client:
            answer = await client.get("/")
            assert answer.status_code == 502
            assert f"cannot connect to upstream 127.0.0.1:{port}".encode() in answer.content

    run(body)


def test_a_client_leaving_mid_request_frees_its_slot_and_the_upstream_connection():
    async def body():
        async with stack(container_concurrency=2) as (user, proxy, ports, client):
            assert (await client.get("/")).status_code == 200  # a pooled connection: the no-task path
            _, writer = await asyncio.open_connection("127.0.0.1", ports["serving_port"])
            writer.write(b"GET /sleep?s=5 HTTP/1.1\r\nHost: a\r\n\r\n")
            await wait_until(lambda: user.in_flight == 1, what="the request to reach the container")
            writer.transport.abort()
            # The proxy dropped its upstream connection, so the container saw it go.
            await wait_until(lambda: user.in_flight == 0, what="the container to see the request go")
            assert await settled(proxy.handler.breaker) == (0, 0, 0)
            assert proxy.stats.concurrency == 0

    run(body)


def test_a_pooled_connection_dropped_by_the_user_container_is_replayed_once():
    """The no-task path meets a keep-alive connection the user container has just closed."""

    async def body():
        answered = []

        async def one_answer_per_connection(
            reader: asyncio.StreamReader, writer: asyncio.StreamWriter
        ) -> None:
            await reader.readuntil(b"\r\n\r\n")
            answered.append(1)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            await writer.drain()
            await reader.readuntil(b"\r\n\r\n")
            writer.close()  # the next request on this connection is dropped unanswered

        upstream = await asyncio.start_server(one_answer_per_connection, "127.0.0.1", 0)
        async with (
            upstream,
            running_queue_proxy(upstream.sockets[0].getsockname()[1]) as (proxy, ports),
            client_for(ports["serving_port"]) as client,
        ):
            await wait_ready(proxy)
            answers = [await client.get("/") for _ in range(4)]
        assert [(a.status_code, a.content) for a in answers] == [(200, b"ok")] * 4
        assert len(answered) == 4

    run(body)


def test_user_container_dying_gives_502_and_the_next_request_works():
    async def body():
        async with stack() as (_, _, _, client):
            died = await client.get("/die")
            assert died.status_code == 502
            assert (await client.get("/")).status_code == 200

    run(body)


# -- headers -------------------------------------------------------------------------------------
def test_original_host_is_restored_and_revision_headers_are_stripped():
    async def body():
        async with stack() as (_, _, _, client):
            answer = await client.get(
                "/headers",
                headers={
                    "Host": "10.0.0.7:8012",
                    "K-Original-Host": "hello.default.example.com",
                    "Knative-Serving-Revision": "hello-00001",
                    "Knative-Serving-Namespace": "default",
                    "K-Proxy-Request": "activator",
                },
            )
            seen = json.loads(answer.content)
            assert seen["host"] == "hello.default.example.com"
            assert "k-original-host" not in seen
            assert "knative-serving-revision" not in seen and "knative-serving-namespace" not in seen
            assert seen["k-proxy-request"] == "activator"

    run(body)
