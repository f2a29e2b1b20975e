"""Leadership on the controller's seam, as the elector drives it: a replica that stops leading writes
nothing more at once (pending writes dropped, pushes refused, someone's deletion not put back) and,
leading again, starts afresh from its warm caches; the webhook's lookup refuses to answer until every
watch has listed, so a pod created during startup is refused retryably, not admitted bare, and the
replica is not ready (``/readyz``, the manifest's readiness probe) until then and until its webhook
listens, so the API server does not call it through Service kpa-controller before."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from kube_controller_fixtures import (
    ALLOW_ZERO,
    FROM_ZERO,
    NS,
    SYSTEM,
    Running,
    config_map,
    deployment,
    run,
)
from waiting import wait_until

from kubebackend.controller import Controller, ControllerOptions
from kubebackend.webhook import NotReady

pytestmark = pytest.mark.timeout(60)

WRITES = ("create", "patch", "update", "delete")


def seed(kube) -> None:
    kube.core.create_namespaced_config_map(SYSTEM, config_map(ALLOW_ZERO))
    kube.apps.create_namespaced_deployment(NS, deployment("hello", FROM_ZERO))


def test_a_replica_that_stops_leading_writes_nothing_more_and_leading_again_starts_afresh():
    async def body(kube) -> None:
        async with Running(kube) as running:
            controller = running.controller
            await wait_until(lambda: running.slice_view("hello")[0] == "proxy", timeout=10)
            stopping = controller.stopped_leading()
            assert stopping is not None and not controller.leading  # at once, before any await
            assert controller.stopped_leading() is None  # said once
            await stopping
            kube.server.cluster.faults.reset_counts()

            refused = await running.push("hello", 4.0)
            assert refused.status_code == 503 and "kpa-controller-leader" in refused.json()["error"]
            await asyncio.to_thread(kube.discovery.delete_namespaced_endpoint_slice, "hello-kpa", NS)
            await asyncio.to_thread(kube.apps.create_namespaced_deployment, NS, deployment("late", FROM_ZERO))
            await asyncio.sleep(1.0)  # nothing may happen for a while: the absence under test
            assert running.slice("hello") is None and running.service("late") is None
            assert sum(kube.server.requests(verb) for verb in WRITES) == 2  # the test's own two
            assert controller.status()["leader"] is False

            await controller.became_leader()  # the elector's on_started_leading, again
            await wait_until(lambda: running.slice_view("hello")[0] == "proxy", timeout=5)
            await wait_until(lambda: running.slice_view("late")[0] == "proxy", timeout=5)
            accepted = await running.push("hello", 4.0)
            assert accepted.status_code == 200
            await wait_until(lambda: running.replicas("hello") == 1, timeout=5)  # scaling again: 0 -> 1

    run(body, seed)


def test_the_webhooks_lookup_and_readiness_wait_until_every_watch_has_listed_and_the_webhook_listens():
    async def body(kube) -> None:
        controller = Controller(kube.server.configuration(), ControllerOptions(host="127.0.0.1", port=0))
        controller.webhook_expected = True  # as `kpa controller` runs it
        lookup = controller.sidecar_lookup("kpa:1")
        try:
            with pytest.raises(NotReady, match="waiting for the first list of deployments"):
                lookup(NS, {"app": "hello"})
            assert controller.not_ready()[0].startswith("waiting for the first list of deployments")
            await controller.start(lead=False, sync_timeout=10)
            spec = lookup(NS, {"app": "hello"})
            assert spec is not None and (spec.revision, spec.image) == ("hello", "kpa:1")
            readyz = controller.status_server.url + "/readyz"
            async with httpx.AsyncClient(trust_env=False) as http:
                waiting = await http.get(readyz)
                assert waiting.status_code == 503 and "the webhook is not listening yet" in waiting.text
                controller.webhook_serving = True  # run_webhook's on_serving, in the command
                assert (await http.get(readyz)).text == "ok\n"
        finally:
            await controller.stop()

    run(body, seed)
