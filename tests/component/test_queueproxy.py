"""The queue-proxy in process, on real loopback sockets, in front of a real user container: the
breaker, timeouts, failures of the user container or the client, and the headers it rewrites.

Its stats are in test_queueproxy_stats.py, its probes in test_queueproxy_probes.py.
"""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from queueproxy_fixtures import (
    client_for,
    free_port,
    run,
    running_queue_proxy,
    stack,
    wait_ready,
)
from waiting import wait_until

pytestmark = pytest.mark.timeout(30)


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
            assert counts["kpa_queue_rejected_requests_total", None] == 1
            assert counts["revision_request_count_total", "200"] == admitted
            assert counts["revision_request_count_total", "503"] == 1
            # The 503 never reached the user container: the app counts only what it answered.
            assert counts["revision_app_request_count_total", "200"] == admitted
            assert ("revision_app_request_count_total", "503") not in counts

    run(body)


def test_without_container_concurrency_there_is_no_breaker():
    async def body():
        async with stack(container_concurrency=0) as (user, proxy, _, client):
            assert proxy.handler.breaker is None
            held = [asyncio.ensure_future(client.get("/gate")) for _ in range(60)]
            # all 60 reach the app at once (held there until released): nothing queued them
            await wait_until(lambda: user.in_flight == 60, timeout=10.0, what="60 requests at the app")
            user.gate.set()
            assert {a.status_code for a in await asyncio.gather(*held)} == {200}
            assert user.max_in_flight == 60

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
