"""The activator's control API over HTTP: configure revisions and endpoints, errors that name the fix."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
from activator_fixtures import Pod, run
from prometheus_client.parser import text_string_to_metric_families
from waiting import wait_until

from activator.admin import AdminApi
from activator.server import Activator

ADMIN_TOKEN = "test-admin-token"


@contextlib.asynccontextmanager
async def started() -> AsyncIterator[tuple[Activator, httpx.AsyncClient, httpx.AsyncClient]]:
    """The activator with its admin API, a client for each port; all closed however the test ends."""
    activator = Activator()
    admin_api = AdminApi(activator, ADMIN_TOKEN)
    try:
        ports = await activator.start("127.0.0.1", 0, admin_port=0, admin_handler=admin_api.handle)
        async with (
            httpx.AsyncClient(
                base_url=f"http://127.0.0.1:{ports.admin}",
                timeout=5.0,
                headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
            ) as admin,
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{ports.serving}", timeout=5.0) as data,
        ):
            yield activator, admin, data
    finally:
        await activator.stop()


def held(admin: httpx.AsyncClient, path: str, count: int) -> Callable[[], Awaitable[bool]]:
    """A predicate for ``wait_until``: the admin API shows ``count`` requests held for the revision."""

    async def holding() -> bool:
        return (await admin.get(path)).json()["held"] == count

    return holding


def test_an_autoscaler_can_drive_a_revision_from_zero_through_the_admin_api():
    async def body():
        async with started() as (_, admin, data), Pod() as pod:
            created = await admin.put("/revisions/ml/predictor", json={"container_concurrency": 2,
                                                                       "timeout_seconds": 30})
            assert created.status_code == 200
            status = created.json()
            assert (status["name"], status["namespace"], status["capacity"], status["held"]) == (
                "predictor", "ml", 0, 0)
            assert status["effective_queue_bound"] == 1000
            waiting = asyncio.ensure_future(data.get("/", headers={"host": "predictor.ml.svc.cluster.local"}))
            await wait_until(held(admin, "/revisions/ml/predictor", 1), what="the request held at zero")
            endpoints = await admin.put("/revisions/ml/predictor/endpoints",
                                        json={"addresses": [pod.address]})
            assert endpoints.status_code == 200
            assert endpoints.json()["endpoints"] == [pod.address]
            reply = await waiting
            assert reply.status_code == 200
            listed = (await admin.get("/revisions")).json()["revisions"]
            assert [(r["namespace"], r["name"], r["healthy"], r["capacity"]) for r in listed] == [
                ("ml", "predictor", [pod.address], 2)]
            metrics = {f.name: f for f in text_string_to_metric_families((await admin.get("/metrics")).text)}
            revision = {"namespace_name": "ml", "configuration_name": "predictor",
                        "revision_name": "predictor", "service_name": "predictor", "pod_name": "activator",
                        "container_name": "activator"}  # fmt: skip
            assert [(s.labels, s.value) for s in metrics["activator_request_count"].samples] == [
                ({**revision, "response_code": "200", "response_code_class": "2xx"}, 1)]
            healthy = metrics["kpa_activator_healthy_pods"].samples
            assert [(s.labels, s.value) for s in healthy] == [(revision, 1)]
            assert metrics["kpa_activator_capacity_wait_seconds"].type == "histogram"
            cold = {s.name: s.value for s in metrics["kpa_activator_cold_start_wait_seconds"].samples}
            assert cold["kpa_activator_cold_start_wait_seconds_count"] == 1  # it was held at zero
            removed = await admin.delete("/revisions/ml/predictor")
            assert removed.json() == {"removed": "ml/predictor"}
            gone = await data.get("/", headers={"host": "predictor.ml"})
            assert gone.status_code == 404

    run(body)


def test_removing_a_revision_answers_its_held_requests_503():
    async def body():
        async with started() as (_, admin, data):
            await admin.put("/revisions/default/hello", json={})
            waiting = asyncio.ensure_future(data.get("/", headers={"host": "hello"}))
            await wait_until(held(admin, "/revisions/default/hello", 1), what="the request held at zero")
            await admin.delete("/revisions/default/hello")
            reply = await waiting
            assert reply.status_code == 503
            assert "was removed" in reply.text

    run(body)


def test_bad_requests_get_errors_that_name_the_input():
    async def body():
        async with started() as (activator, admin, _):
            cases = [
                (admin.put("/revisions/default/hello", json={"container_concurrency": -1}), 400,
                 "container_concurrency=-1"),
                (admin.put("/revisions/default/hello", json={"cc": 1}), 400, "unknown field(s) ['cc']"),
                (admin.put("/revisions/default/Bad_Name", json={}), 400, "revision name='Bad_Name'"),
                (admin.put("/revisions/default/hello", json={"namespace": "other"}), 400, "does not match"),
                (admin.put("/revisions/default/hello", content=b"{nope"), 400, "not JSON"),
                (admin.put("/revisions/default/nope/endpoints", json={"addresses": []}), 404,
                 "unknown revision default/nope"),
                (admin.get("/revisions/default/nope"), 404, "unknown revision default/nope"),
                (admin.post("/revisions/default/hello", json={}), 405, "use GET, PUT, DELETE"),
                (admin.get("/nowhere"), 404, "no such admin path"),
                (admin.put("/activators", json={"index": 2, "count": 2}), 400, "index=2 count=2"),
                (admin.put("/activators", json={"index": "0"}), 400, '{"index": <int>, "count": <int>}'),
            ]
            for call, status, fragment in cases:
                reply = await call
                assert reply.status_code == status, (fragment, reply.text)
                assert fragment in reply.json()["error"], reply.text
            await admin.put("/revisions/default/hello", json={})
            bad_address = await admin.put("/revisions/default/hello/endpoints",
                                          json={"addresses": ["127.0.0.1"]})
            assert bad_address.status_code == 400
            assert "endpoint address '127.0.0.1': must be host:port" in bad_address.json()["error"]
            slot = await admin.put("/activators", json={"index": 1, "count": 3})
            assert slot.json() == {"index": 1, "count": 3}
            assert activator.activator_slot == (1, 3)

    run(body)
