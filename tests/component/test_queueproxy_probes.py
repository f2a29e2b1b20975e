"""The queue-proxy's probes in process, on real loopback sockets, in front of a real user container:
its readiness probing of the container, and the probe requests it answers itself.
"""

from __future__ import annotations

import asyncio
import time

import pytest
from queueproxy_fixtures import (
    UserContainer,
    client_for,
    free_port,
    run,
    running_queue_proxy,
    stack,
    wait_ready,
)
from waiting import wait_until

from queueproxy.config import ProbeSpec

pytestmark = pytest.mark.timeout(30)


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
