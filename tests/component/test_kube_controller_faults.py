"""`kpa controller` under an unwell API server (the fake's fault injection): 409s and 500s on the scale
and on the slice are retried until they pass, dropped watches and an expired history are survived,
failing Events cost nothing, and every request it makes is one its RBAC grants."""

from __future__ import annotations

import pytest
from kube_controller_fixtures import ALLOW_ZERO, FROM_ZERO, NS, SYSTEM, Running, config_map, deployment, run
from waiting import wait_until

from fakecluster.faults import VERBS
from fakecluster.resources import ALL, DEPLOYMENTS
from kubebackend.rbac import CONTROLLER_CALLS

pytestmark = pytest.mark.timeout(60)


def seed(kube) -> None:
    kube.core.create_namespaced_config_map(SYSTEM, config_map(ALLOW_ZERO))
    kube.apps.create_namespaced_deployment(NS, deployment("hello", FROM_ZERO))


def test_conflicts_and_server_errors_on_the_scale_are_retried_until_it_is_set():
    async def body(kube) -> None:
        async with Running(kube) as running:
            await wait_until(lambda: running.slice("hello") is not None, timeout=10)
            kube.server.fail_next(1, "patch", "deployments/scale", 409)
            kube.server.fail_next(2, "patch", "deployments/scale", 500)
            await running.push("hello", 1.0)
            await wait_until(lambda: running.replicas("hello") == 1, timeout=10)
            assert kube.server.requests("patch", "deployments/scale") == 4
            assert running.controller.actuator.scale_writes == 4

    run(body, seed)


def test_server_errors_on_the_service_and_the_slice_are_retried():
    async def body(kube) -> None:
        kube.server.fail_next(2, "create", "services", 503)
        kube.server.fail_next(2, "create", "endpointslices", 500)
        creates = kube.server.requests("create", "endpointslices")  # the activators' slice, seeded
        async with Running(kube) as running:
            await wait_until(lambda: running.slice_view("hello")[0] == "proxy", timeout=10)
            assert kube.server.requests("create", "endpointslices") == creates + 3

    run(body, seed)


def test_dropped_watches_and_an_expired_history_are_survived():
    async def body(kube) -> None:
        async with Running(kube) as running:
            await wait_until(lambda: running.slice("hello") is not None, timeout=10)
            lists = sum(i.lists for i in running.controller.informers.values())
            kube.server.compact()  # a watch resuming from before now would get 410 Gone
            kube.server.fail_next(3, "list", "*", 500)  # and the re-lists fail at first
            assert kube.server.drop_watches() == 7
            kube.apps.create_namespaced_deployment(NS, deployment("later", FROM_ZERO))
            await wait_until(lambda: running.slice("later") is not None, timeout=10)
            informers = running.controller.informers.values()
            await wait_until(lambda: sum(i.lists for i in informers) >= lists + 7, timeout=10)
            # Still watching: a change after the reconnection arrives too.
            kube.apps.delete_namespaced_deployment("later", NS)
            await wait_until(lambda: running.slice("later") is None, timeout=10)

    run(body, seed)


def test_failing_events_do_not_stop_the_controller():
    async def body(kube) -> None:
        kube.server.fail_next(100, "create", "events", 500)
        async with Running(kube) as running:
            await wait_until(lambda: running.controller.events.failed >= 1, timeout=10)
            await wait_until(lambda: running.slice("hello") is not None, timeout=10)
            await running.push("hello", 1.0)
            await wait_until(lambda: running.replicas("hello") == 1, timeout=10)

    def seed_with_a_bad_one(kube) -> None:
        seed(kube)
        kube.apps.create_namespaced_deployment(
            NS, deployment("bad", {**FROM_ZERO, "autoscaling.knative.dev/window": "1h2"})
        )

    run(body, seed_with_a_bad_one)


def test_every_request_the_controller_makes_is_granted_by_its_rbac():
    async def body(kube) -> None:
        kube.server.cluster.faults.reset_counts()  # the test's own seeding is not the controller's
        async with Running(kube) as running:
            await wait_until(lambda: running.slice("hello") is not None, timeout=10)
            await running.push("hello", 1.0)
            await wait_until(lambda: running.replicas("hello") == 1, timeout=10)
            await wait_until(lambda: running.events("bad", "InvalidAutoscaling"), timeout=10)
            kube.server.cluster.delete(DEPLOYMENTS, NS, "hello")  # not over HTTP: not counted
            await wait_until(lambda: running.service("hello") is None, timeout=10)
        made = {
            (resource.group, name, verb)
            for resource in ALL
            for name in (resource.plural, *(f"{resource.plural}/{sub}" for sub in resource.subresources))
            for verb in VERBS
            if kube.server.requests(verb, name)
        }
        assert made <= CONTROLLER_CALLS, f"not granted: {sorted(made - CONTROLLER_CALLS)}"
        for call in [
            ("apps", "deployments/scale", "patch"),
            ("", "events", "create"),
            ("", "services", "delete"),
        ]:
            assert call in made

    def seed_with_a_bad_one(kube) -> None:
        seed(kube)
        kube.apps.create_namespaced_deployment(
            NS, deployment("bad", {**FROM_ZERO, "autoscaling.knative.dev/window": "x"})
        )

    run(body, seed_with_a_bad_one)
