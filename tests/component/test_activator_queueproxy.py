"""Scale from zero against a real pod: `kpa queue-proxy` + the sample app as child processes."""

from __future__ import annotations

import asyncio
import json
import sys

import httpx
import pytest
from activator_fixtures import FakeAutoscaler, free_port, run
from waiting import wait_until

from activator.config import RevisionConfig
from activator.server import Activator
from activator.sinks import HttpStatSink
from autoscaler.stat import RevisionKey

pytestmark = pytest.mark.timeout(40)

KEY = RevisionKey("default", "hello")


async def spawn(*args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL
    )


def test_held_request_is_served_by_a_real_queue_proxy_pod_started_after_it_arrived():
    async def body():
        async with FakeAutoscaler() as autoscaler:
            activator = Activator(stat_sink=HttpStatSink(autoscaler.url))
            activator.set_revision(RevisionConfig("hello", container_concurrency=1, timeout_seconds=20))
            procs: list[asyncio.subprocess.Process] = []
            try:
                ports = await activator.start("127.0.0.1", 0)
                qp_port, user_port = free_port(), free_port()
                activator.set_endpoints(KEY, [f"127.0.0.1:{qp_port}"])
                async with httpx.AsyncClient(
                    base_url=f"http://127.0.0.1:{ports.serving}", headers={"host": "hello"}, timeout=20.0
                ) as client:
                    await scale_from_zero(autoscaler, client, procs, qp_port, user_port)
            finally:
                await activator.stop()
                await stop_all(procs)

    run(body, timeout=35)


async def stop_all(procs: list[asyncio.subprocess.Process]) -> None:
    for proc in procs:
        if proc.returncode is None:
            proc.terminate()
    for proc in procs:
        try:
            await asyncio.wait_for(proc.wait(), 5)
        except TimeoutError:
            proc.kill()
            await proc.wait()


async def scale_from_zero(
    autoscaler: FakeAutoscaler,
    client: httpx.AsyncClient,
    procs: list[asyncio.subprocess.Process],
    qp_port: int,
    user_port: int,
) -> None:
    """The test's steps; the pod's processes go into ``procs`` for the caller to stop."""
    held = asyncio.ensure_future(client.get("/"))
    # The "autoscaler" starts the pod when the scale-from-zero stat arrives.
    await autoscaler.wait_for(lambda stats: len(stats) >= 1, timeout=3.0)
    assert not held.done()
    procs.append(await spawn("-m", "kpa.sample_app", "--port", str(user_port), "--delay", "0.02"))
    procs.append(await spawn(
        "-m", "kpa", "queue-proxy", "--serving-port", str(qp_port), "--admin-port", "0",
        "--stats-port", "0", "--metrics-port", "0", "--user-port", str(user_port),
        "--container-concurrency", "1", "--pod-name", "hello-pod-1", "--drain-timeout", "0",
    ))  # fmt: skip
    qp_ports = json.loads(await asyncio.wait_for(procs[1].stdout.readline(), 10))
    reply = await held
    assert reply.status_code == 200
    assert reply.text.startswith("hello from ")
    assert reply.headers["x-kpa-cold-start"] == "true"
    burst = await asyncio.gather(*(client.get(f"/{i}") for i in range(12)))
    assert [r.status_code for r in burst] == [200] * 12
    assert {r.headers["x-kpa-cold-start"] for r in burst} == {"false"}
    app_stats = (await client.get(f"http://127.0.0.1:{user_port}/_stats")).json()
    assert app_stats["max_in_flight"] == 1
    assert app_stats["served"] == 13

    # The queue-proxy saw K-Proxy-Request: activator, so its stat counts these as proxied.
    async def proxied_counted() -> bool:
        stat = (await client.get(f"http://127.0.0.1:{qp_ports['stats_port']}/stats")).json()
        return stat["proxied_request_count"] > 0

    await wait_until(proxied_counted, 5, "the queue-proxy's stat to count proxied requests", 0.2)
