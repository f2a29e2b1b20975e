"""The activator on real loopback sockets: holding at zero, throttling, failures, replicas."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import httpx
import pytest
from activator_fixtures import FakeAutoscaler, Pod, free_port, run
from prometheus_client.parser import text_string_to_metric_families
from waiting import wait_until

from activator.config import RevisionConfig
from activator.server import Activator
from activator.sinks import HttpStatSink
from autoscaler.stat import RevisionKey

pytestmark = pytest.mark.timeout(30)

KEY = RevisionKey("default", "hello")


@contextlib.asynccontextmanager
async def running_activator(
    *, cc=1, timeout=10.0, queue_bound=None, sink=None, slot=(-1, 1), **kwargs
) -> AsyncIterator[tuple[Activator, httpx.AsyncClient]]:
    """An activator serving revision "hello", and a client for it; both closed however the test ends."""
    activator = Activator(stat_sink=sink, activator_index=slot[0], activator_count=slot[1], **kwargs)
    activator.set_revision(
        RevisionConfig("hello", container_concurrency=cc, timeout_seconds=timeout, queue_bound=queue_bound)
    )
    try:
        ports = await activator.start("127.0.0.1", 0)
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{ports.serving}",
            headers={"host": "hello"},
            timeout=10.0,
            limits=httpx.Limits(max_connections=200),
        ) as client:
            yield activator, client
    finally:
        await activator.stop()


def test_request_at_zero_is_held_reported_at_once_and_served_the_moment_a_pod_passes_its_probe():
    async def body():
        async with (
            FakeAutoscaler() as autoscaler,
            running_activator(sink=HttpStatSink(autoscaler.url)) as (activator, client),
        ):
            port = free_port()  # the pod's address is known before it listens, as with a starting pod
            activator.set_endpoints(KEY, [f"127.0.0.1:{port}"])
            pod = Pod()
            try:
                pending = asyncio.ensure_future(client.get("/work", headers={"x-trace": "1"}))
                await autoscaler.wait_for(lambda stats: len(stats) >= 1, timeout=2.0)
                namespace, revision, first = autoscaler.stats()[0]
                assert (namespace, revision) == ("default", "hello")
                assert (first.average_concurrent_requests, first.request_count) == (1.0, 1.0)
                assert first.pod_name == "activator"
                await asyncio.sleep(0.5)  # a negative check: probes keep failing, the request stays held
                assert not pending.done()
                assert activator.revision_status(KEY)["held"] == 1
                await pod.start(port)
                started = time.monotonic()
                reply = await pending
                assert time.monotonic() - started < 0.5  # one probe period (0.2 s) plus forwarding
                assert reply.status_code == 200
                assert reply.text == f"served by {port}\n"
                assert reply.headers["x-kpa-cold-start"] == "true"
                seen = pod.seen[0]
                assert seen[b"k-proxy-request"] == b"activator"
                assert seen[b"k-original-host"] == b"hello"
                assert seen[b"host"] == f"127.0.0.1:{port}".encode()
                assert seen[b"x-trace"] == b"1"
                warm = await client.get("/again")
                assert warm.headers["x-kpa-cold-start"] == "false"

                # periodic reports count both requests minus the one the immediate stat already reported
                def periodic_count(stats):
                    return sum(stat.request_count for _, _, stat in stats[1:])

                await autoscaler.wait_for(lambda stats: periodic_count(stats) >= 1, timeout=3.0)
                assert periodic_count(autoscaler.stats()) == 1
            finally:
                await pod.stop()

    run(body)


def test_bursts_never_exceed_cc_at_any_pod():
    async def body():
        async with contextlib.AsyncExitStack() as stack:
            pods = [await stack.enter_async_context(Pod(delay=0.02)) for _ in range(3)]
            activator, client = await stack.enter_async_context(running_activator(cc=2))
            activator.set_endpoints(KEY, [p.address for p in pods])
            await wait_until(lambda: activator.revision_status(KEY)["capacity"] == 6)
            replies = await asyncio.gather(*(client.get(f"/{i}") for i in range(60)))
            assert [r.status_code for r in replies] == [200] * 60
            assert [p.max_in_flight for p in pods] == [2, 2, 2]
            assert sum(p.served for p in pods) == 60

    run(body)


def test_overflow_is_refused_at_once_with_retry_after_and_waiting_too_long_gets_504():
    async def body():
        async with running_activator(cc=1, timeout=0.4, queue_bound=2) as (activator, client):
            held = [asyncio.ensure_future(client.get(f"/{i}")) for i in range(2)]
            await wait_until(lambda: activator.revision_status(KEY)["held"] == 2)
            started = time.monotonic()
            overflow = await client.get("/overflow")
            assert time.monotonic() - started < 0.2
            assert overflow.status_code == 503
            assert overflow.headers["retry-after"] == "1"
            assert "queue bound 2" in overflow.text
            timed_out = await asyncio.gather(*held)
            assert [r.status_code for r in timed_out] == [504, 504]
            assert timed_out[0].text.startswith("activator request timeout: waited 0.4s for capacity")
            samples = {
                (s.name, s.labels.get("response_code") or s.labels.get("le")): s.value
                for family in text_string_to_metric_families((await activator.metrics_text()).decode())
                for s in family.samples
                if s.labels.get("revision_name") == "hello"
            }
            assert samples["activator_request_count_total", "503"] == 1
            assert samples["activator_request_count_total", "504"] == 2
            assert samples["kpa_activator_capacity_wait_seconds_bucket", "0.5"] == 2

    run(body)


@pytest.mark.parametrize("mode", ["die-mid-stream", "die-before-head"])
def test_pod_dying_during_a_request_gives_the_client_a_clean_error_not_a_hang(mode):
    async def body():
        async with Pod(mode=mode) as pod, running_activator(cc=1) as (activator, client):
            activator.set_endpoints(KEY, [pod.address])
            await wait_until(lambda: activator.revision_status(KEY)["capacity"] == 1)
            started = time.monotonic()
            if mode == "die-mid-stream":
                with pytest.raises(httpx.RemoteProtocolError):
                    await client.get("/stream")
            else:
                reply = await client.get("/x")
                assert reply.status_code == 502
                assert f"pod {pod.address} failed" in reply.text
            assert time.monotonic() - started < 1.0
            assert activator.revision_status(KEY)["in_flight"] == 0  # the slot came back

    run(body)


def test_refused_connection_is_retried_on_another_pod_with_its_body():
    async def body():
        async with contextlib.AsyncExitStack() as stack:
            pods = [await stack.enter_async_context(Pod()) for _ in range(2)]
            activator, client = await stack.enter_async_context(running_activator(cc=1))
            activator.set_endpoints(KEY, [p.address for p in pods])
            await wait_until(lambda: activator.revision_status(KEY)["capacity"] == 2)
            first = min(pods, key=lambda p: p.address)  # first-available picks the lowest address
            other = pods[1] if first is pods[0] else pods[0]
            await first.stop()  # gone without anyone telling the activator
            reply = await client.post("/submit", content=b"payload-123")
            assert reply.status_code == 200
            assert reply.text == f"served by {other.port}\n"
            assert other.bodies == [b"payload-123"]
            assert activator.revision_status(KEY)["healthy"] == [other.address]

    run(body)


def test_refused_connection_with_no_other_pod_is_held_until_the_pod_is_back():
    async def body():
        async with Pod() as pod, running_activator(cc=1) as (activator, client):
            activator.set_endpoints(KEY, [pod.address])
            await wait_until(lambda: activator.revision_status(KEY)["capacity"] == 1)
            port = pod.port
            await pod.stop()
            pending = asyncio.ensure_future(client.get("/x"))
            await wait_until(lambda: activator.revision_status(KEY)["held"] == 1)
            assert activator.revision_status(KEY)["capacity"] == 0
            revived = Pod()  # the pod back on the same port
            try:
                await revived.start(port)
                reply = await pending
            finally:
                await revived.stop()
            assert (reply.status_code, reply.text) == (200, f"served by {port}\n")
            assert reply.headers["x-kpa-cold-start"] == "true"

    run(body)


def test_two_activator_replicas_share_pods_without_exceeding_cc():
    async def body():
        async with contextlib.AsyncExitStack() as stack:
            pods = [await stack.enter_async_context(Pod(delay=0.02)) for _ in range(4)]
            replicas = [
                await stack.enter_async_context(running_activator(cc=1, slot=(i, 2))) for i in range(2)
            ]
            for activator, _ in replicas:
                activator.set_endpoints(KEY, [p.address for p in pods])
            for activator, _ in replicas:
                await wait_until(lambda a=activator: a.revision_status(KEY)["capacity"] == 2)
            assigned = [set(a.revision_status(KEY)["assigned"]) for a, _ in replicas]
            assert assigned[0].isdisjoint(assigned[1])
            assert assigned[0] | assigned[1] == {p.address for p in pods}
            replies = await asyncio.gather(*(replicas[i % 2][1].get(f"/{i}") for i in range(40)))
            assert [r.status_code for r in replies] == [200] * 40
            assert [p.max_in_flight for p in pods] == [1, 1, 1, 1]

    run(body)


def test_health_probe_and_unknown_revision():
    async def body():
        async with running_activator() as (_, client):
            probe = await client.get("/", headers={"k-network-probe": "activator"})
            assert (probe.status_code, probe.text) == (200, "activator")
            wrong = await client.get("/", headers={"k-network-probe": "queue"})
            assert wrong.status_code == 400
            kubelet = await client.get("/", headers={"user-agent": "kube-probe/1.30"})
            assert kubelet.status_code == 200
            unknown = await client.get("/", headers={"host": "nope.default"})
            assert unknown.status_code == 404
            assert "unknown revision default/nope" in unknown.text
            assert "known revisions: default/hello" in unknown.text
            headers = {"host": "127.0.0.1", "knative-serving-revision": "nope"}
            by_header = await client.get("/", headers=headers)
            assert by_header.status_code == 404

    run(body)


def test_client_leaving_while_held_frees_its_place():
    async def body():
        async with running_activator(cc=1, queue_bound=1) as (activator, client):
            pending = asyncio.ensure_future(client.get("/x"))
            await wait_until(lambda: activator.revision_status(KEY)["held"] == 1)
            pending.cancel()
            await wait_until(lambda: activator.revision_status(KEY)["held"] == 0)
            async with Pod() as pod:
                activator.set_endpoints(KEY, [pod.address])
                reply = await client.get("/y")
                assert reply.status_code == 200
                assert pod.served == 1

    run(body)


def test_pod_slower_than_the_revision_timeout_gets_504_and_its_slot_back():
    async def body():
        async with Pod(delay=2.0) as pod, running_activator(cc=1, timeout=0.3) as (activator, client):
            activator.set_endpoints(KEY, [pod.address])
            await wait_until(lambda: activator.revision_status(KEY)["capacity"] == 1)
            started = time.monotonic()
            reply = await client.get("/slow")
            assert 0.25 < time.monotonic() - started < 1.0
            assert reply.status_code == 504
            assert reply.text.startswith(f"activator request timeout: pod {pod.address} did not answer")
            assert activator.revision_status(KEY)["in_flight"] == 0

    run(body)
