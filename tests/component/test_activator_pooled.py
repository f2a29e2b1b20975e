"""Requests the activator sends at once on the idle connection the pod's last request left in the pool.

Once a pod has answered, its connection waits in the pool, and the next request that gets a slot at
once goes out on it. Every outcome must be the same as on a new connection: the pod's answer with the
activator's headers, 502 when the pod fails it, 504 at the revision timeout, another pod when the
pooled connection is dead and the pod refuses its replay, and the slot back in all cases, including
when the client gives up.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator

import httpx
import pytest
from activator_fixtures import Pod, run
from test_activator import KEY, running_activator
from waiting import wait_until

from activator.server import Activator

pytestmark = pytest.mark.timeout(30)


@contextlib.asynccontextmanager
async def warmed(**activator_kwargs) -> AsyncIterator[tuple[Pod, Activator, httpx.AsyncClient]]:
    """An activator with one pod (cc 1) that has served one request: its connection is in the pool.
    All of it stopped however the test ends."""
    async with Pod() as pod, running_activator(**activator_kwargs) as (activator, client):
        activator.set_endpoints(KEY, [pod.address])
        await wait_until(lambda: activator.revision_status(KEY)["capacity"] == 1)
        first = await client.get("/warm")
        assert first.status_code == 200
        yield pod, activator, client


def test_pooled_request_carries_the_activators_headers_both_ways():
    async def body():
        async with warmed(cc=1) as (pod, activator, client):
            replies = [await client.post("/again", content=b"abc") for _ in range(5)]
            assert [r.status_code for r in replies] == [200] * 5
            assert all(r.headers["x-kpa-cold-start"] == "false" for r in replies)
            seen = pod.seen[-1]
            assert seen[b"k-proxy-request"] == b"activator" and seen[b"k-original-host"] == b"hello"
            assert pod.bodies[-5:] == [b"abc"] * 5
            assert activator.revision_status(KEY)["in_flight"] == 0

    run(body)


@pytest.mark.parametrize("mode", ["die-mid-stream", "die-before-head"])
def test_pod_failing_a_pooled_request_gives_a_clean_error_and_the_slot_back(mode):
    async def body():
        async with warmed(cc=1) as (pod, activator, client):
            pod.mode = mode
            if mode == "die-mid-stream":
                with pytest.raises(httpx.RemoteProtocolError):
                    await client.get("/stream")
            else:
                reply = await client.get("/x")
                assert reply.status_code == 502 and f"pod {pod.address} failed" in reply.text
            assert activator.revision_status(KEY)["in_flight"] == 0
            pod.mode = "ok"
            assert (await client.get("/after")).status_code == 200

    run(body)


def test_pooled_request_slower_than_the_revision_timeout_gets_504_and_the_slot_back():
    async def body():
        async with warmed(cc=1, timeout=0.3) as (pod, activator, client):
            pod.delay = 2.0
            started = time.monotonic()
            reply = await client.get("/slow")
            assert 0.25 < time.monotonic() - started < 1.5
            assert reply.status_code == 504
            assert reply.text.startswith(f"activator request timeout: pod {pod.address} did not answer")
            assert activator.revision_status(KEY)["in_flight"] == 0

    run(body)


def test_client_giving_up_on_a_pooled_request_frees_the_slot_for_the_next():
    async def body():
        async with warmed(cc=1) as (pod, activator, client):
            pod.delay = 1.0
            with pytest.raises(httpx.ReadTimeout):
                await client.get("/abandoned", timeout=0.2)
            await wait_until(lambda: activator.revision_status(KEY)["in_flight"] == 0, timeout=3.0)
            pod.delay = 0.0
            reply = await client.get("/next")
            assert reply.status_code == 200

    run(body)


def test_pooled_request_dropped_by_a_pod_that_vanished_is_retried_on_another_pod():
    async def body():
        async with contextlib.AsyncExitStack() as stack:
            pods = [await stack.enter_async_context(Pod()) for _ in range(2)]
            activator, client = await stack.enter_async_context(running_activator(cc=1))
            activator.set_endpoints(KEY, [p.address for p in pods])
            first = min(pods, key=lambda p: p.address)  # first-available picks the lowest address
            other = pods[1] if first is pods[0] else pods[0]
            await wait_until(lambda: activator.revision_status(KEY)["capacity"] == 2)
            assert (await client.get("/warm")).text == f"served by {first.port}\n"
            first.mode = "vanish"  # the pooled connection dies unanswered; a new one is refused
            reply = await client.get("/again")  # on the dead pooled connection, then refused anew
            assert reply.status_code == 200 and reply.text == f"served by {other.port}\n", reply.text
            assert activator.revision_status(KEY)["healthy"] == [other.address]
            assert activator.revision_status(KEY)["in_flight"] == 0

    run(body)
