"""`kpa controller` on the fake API server over real HTTP: enrolment, the traffic flip, scaling from
zero through the scale subresource, KServe predictors found by label, the status API, and an idle
cluster costing no API request per tick."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from kube_controller_fixtures import (
    ACTIVATOR_IPS,
    ALLOW_ZERO,
    FROM_ZERO,
    NS,
    SYSTEM,
    Running,
    StatsEndpoint,
    config_map,
    deployment,
    loopback_ip,
    make_pod,
    run,
)
from waiting import wait_until

from kpa.status import status_table
from tracing.config import TracingConfig

pytestmark = pytest.mark.timeout(60)


def at_activators(view: tuple[str | None, list[str]]) -> bool:
    """Proxy mode listing two of the three activators (Knative's numActivators with TBC 0: two)."""
    mode, addresses = view
    return mode == "proxy" and len(addresses) == 2 and set(addresses) <= set(ACTIVATOR_IPS)


def seed_hello(kube) -> None:
    kube.core.create_namespaced_config_map(SYSTEM, config_map(ALLOW_ZERO))
    kube.apps.create_namespaced_deployment(NS, deployment("hello", FROM_ZERO))


def test_an_enrolled_deployment_at_zero_gets_a_selectorless_service_and_a_slice_of_activators():
    async def body(kube) -> None:
        async with Running(kube) as running:
            await wait_until(lambda: running.slice("hello") is not None, timeout=10)
            service = running.service("hello")
            assert "selector" not in service["spec"]
            assert service["metadata"]["ownerReferences"][0]["name"] == "hello"
            assert at_activators(running.slice_view("hello"))
            slice_ = running.slice("hello")
            assert slice_["metadata"]["labels"]["kubernetes.io/service-name"] == "hello-kpa"
            assert slice_["metadata"]["ownerReferences"][0]["uid"] == service["metadata"]["uid"]
            assert running.replicas("hello") == 0
            # A Deployment that is not enrolled gets nothing.
            assert running.slice("plain") is None and running.service("plain") is None

    def seed(kube) -> None:
        seed_hello(kube)
        kube.apps.create_namespaced_deployment(NS, deployment("plain", replicas=1))

    run(body, seed)


def test_a_stat_push_at_zero_scales_from_zero_and_ready_pods_flip_the_slice_to_them():
    async def body(kube) -> None:
        ip = loopback_ip()
        async with Running(kube) as running, StatsEndpoint(ip, "hello-1", concurrency=1.0) as stats:
            await wait_until(lambda: running.slice_view("hello")[0] == "proxy", timeout=10)
            patches = kube.server.requests("patch", "deployments/scale")
            answer = await running.push("hello", 1.0)
            assert answer.status_code == 200 and answer.json() == {"accepted": 1}
            took = await wait_until(lambda: running.replicas("hello") == 1, timeout=5)
            assert took < 1.0  # the push pokes: no waiting for the next 2 s tick
            assert kube.server.requests("patch", "deployments/scale") == patches + 1
            assert running.slice_view("hello")[0] == "proxy"  # no ready pod yet: the activator holds
            make_pod(kube, "hello-1", "hello", ip)
            await wait_until(lambda: running.slice_view("hello") == ("serve", [ip]), timeout=5)
            await wait_until(lambda: stats.scrapes > 0, timeout=5, what="the controller scraping the pod")
            flips = running.events("hello", "ServeMode")
            assert len(flips) == 1 and flips[0]["type"] == "Normal"
            # The pod stops being ready: back to the activators (Knative's SKS: no ready pod, proxy).
            kube.core.patch_namespaced_pod_status(
                "hello-1", NS, {"status": {"conditions": [{"type": "Ready", "status": "False"}]}}
            )
            await wait_until(lambda: at_activators(running.slice_view("hello")), timeout=5)

    run(body, seed_hello)


def test_an_inference_service_with_min_replicas_zero_is_found_by_label_and_scaled():
    isvc = {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {
            "name": "sklearn",
            "annotations": {
                "serving.kserve.io/autoscalerClass": "external",
                "serving.kserve.io/deploymentMode": "RawDeployment",
                "autoscaling.knative.dev/initial-scale": "0",
            },
        },
        "spec": {"predictor": {"minReplicas": 0, "maxReplicas": 3, "scaleTarget": 5}},
    }
    # KServe names it {isvc}-predictor; the controller must find it by its labels, so give it another.
    predictor = deployment(
        "made-by-kserve",
        replicas=0,
        **{"serving.kserve.io/inferenceservice": "sklearn", "component": "predictor"},
    )

    async def body(kube) -> None:
        async with Running(kube) as running:
            await wait_until(lambda: running.slice_view("made-by-kserve")[0] == "proxy", timeout=10)
            settings = running.controller.service.settings(running.revision("made-by-kserve"))
            # scaleTarget 5 at Knative's 70 % utilization: 3.5 per pod
            assert (settings.min_scale, settings.max_scale, settings.spec.target_value) == (0, 3, 3.5)
            await running.push("made-by-kserve", 12.0)  # 12 in flight wants four pods; maxReplicas: three
            await wait_until(lambda: running.replicas("made-by-kserve") == 3, timeout=5)

    def seed(kube) -> None:
        kube.core.create_namespaced_config_map(SYSTEM, config_map(ALLOW_ZERO))
        kube.custom.create_namespaced_custom_object(
            "serving.kserve.io", "v1beta1", NS, "inferenceservices", isvc
        )
        kube.apps.create_namespaced_deployment(NS, predictor)

    run(body, seed)


IDLE = 30


def test_idle_enrolled_revisions_cause_no_api_requests_per_tick():
    async def body(kube) -> None:
        ip = loopback_ip()
        async with Running(kube, decide_interval=0.1) as running, StatsEndpoint(ip, "busy-1", 0.5) as stats:
            make_pod(kube, "busy-1", "busy", ip)
            await wait_until(lambda: all(running.slice(f"idle-{i}") for i in range(IDLE)), timeout=10)
            await wait_until(lambda: running.slice_view("busy") == ("serve", [ip]), timeout=10)
            await asyncio.sleep(0.3)  # let the last writes' watch events come back
            # Starting cost one Service and one slice per revision (and the busy one's flip), no more:
            # the echoes of those writes, arriving on two watches in no set order, cause none.
            revisions = IDLE + 2
            assert kube.server.requests("create", "services") == revisions
            assert kube.server.requests("create", "endpointslices") == revisions
            assert kube.server.requests("patch", "endpointslices") <= 1
            before = kube.server.requests()
            scrapes = stats.scrapes
            await asyncio.sleep(2.0)  # twenty decision ticks and two scrapes: the idleness under test
            assert kube.server.requests() == before, "an idle revision's tick made an API request"
            assert stats.scrapes > scrapes  # the loop was running all along
            assert running.replicas("busy") == 1

    def seed(kube) -> None:
        seed_hello(kube)
        for i in range(IDLE):
            kube.apps.create_namespaced_deployment(NS, deployment(f"idle-{i}", FROM_ZERO))
        steady = {**FROM_ZERO, "autoscaling.knative.dev/min-scale": "1"}
        kube.apps.create_namespaced_deployment(NS, deployment("busy", steady, replicas=1))
        kube.server.cluster.faults.reset_counts()

    run(body, seed)


def test_a_deleted_deployment_is_no_longer_scaled_and_its_service_and_slice_go():
    async def body(kube) -> None:
        async with Running(kube) as running:
            await wait_until(lambda: running.slice("hello") is not None, timeout=10)
            kube.apps.delete_namespaced_deployment("hello", NS)
            await wait_until(lambda: running.slice("hello") is None and running.service("hello") is None)
            assert running.controller.service.revisions() == []
            answer = await running.push("hello", 1.0)
            assert answer.status_code == 200 and running.controller.service.stats_rejected == 1

    run(body, seed_hello)


def test_the_status_api_serves_the_kpa_status_table_metrics_and_health_and_refuses_bad_pushes():
    async def body(kube) -> None:
        async with Running(kube) as running, httpx.AsyncClient(base_url=running.url) as http:
            await wait_until(lambda: running.slice("hello") is not None, timeout=10)
            doc = (await http.get("/status")).json()
            assert doc["leader"] is True
            [row] = doc["revisions"]
            assert (row["namespace"], row["name"], row["mode"], row["desired_pods"]) == (
                NS,
                "hello",
                "proxy",
                0,
            )
            assert row["slice_mode"] == "proxy"
            assert all(i["synced"] for i in doc["informers"].values())
            status_table(doc)  # what `kpa status --controller URL` prints renders this document
            metrics = (await http.get("/metrics")).text
            assert (
                'kpa_autoscaler_activator_in_path{configuration_name="hello",namespace_name="ns",'
                'revision_name="hello",service_name="hello"} 1.0'
            ) in metrics
            assert "kpa_controller_leader 1.0" in metrics
            assert (await http.get("/healthz")).text == "ok\n"
            bad = await http.post("/stats", content=b'[{"namespace": "ns"}]')
            assert bad.status_code == 400 and "exactly namespace, revision, stat" in bad.json()["error"]
            assert (await http.post("/stats", content=b"not json")).status_code == 400

    run(body, seed_hello)


def test_a_slice_or_service_someone_else_deletes_or_edits_is_put_back():
    async def body(kube) -> None:
        async with Running(kube) as running:
            await wait_until(lambda: at_activators(running.slice_view("hello")), timeout=10)
            kube.discovery.patch_namespaced_endpoint_slice(
                "hello-kpa", NS, {"endpoints": [{"addresses": ["10.66.0.1"]}]}
            )
            await wait_until(lambda: at_activators(running.slice_view("hello")), timeout=5)
            kube.core.delete_namespaced_service("hello-kpa", NS)
            await wait_until(lambda: running.service("hello") is not None, timeout=5)

    run(body, seed_hello)


def test_a_service_name_taken_by_someone_else_is_left_alone_with_a_warning():
    async def body(kube) -> None:
        async with Running(kube) as running:
            await wait_until(lambda: running.events("hello", "ServiceNameTaken"), timeout=10)
            assert running.service("hello")["spec"]["selector"] == {"app": "mine"}
            assert running.slice("hello") is None

    def seed(kube) -> None:
        seed_hello(kube)
        theirs = {
            "metadata": {"name": "hello-kpa"},
            "spec": {"selector": {"app": "mine"}, "ports": [{"port": 80}]},
        }
        kube.core.create_namespaced_service(NS, theirs)

    run(body, seed)


def test_a_standby_watches_and_answers_the_webhook_but_scales_and_writes_nothing():
    async def body(kube) -> None:
        async with Running(kube, lead=False) as running:
            lookup = running.controller.sidecar_lookup("kpa:1")
            spec = lookup(NS, {"app": "hello", "pod-template-hash": "abc"})
            assert (spec.namespace, spec.revision, spec.container_concurrency, spec.image) == (
                NS,
                "hello",
                0,
                "kpa:1",
            )
            assert spec.tracing == TracingConfig()  # off unless the controller was given config-tracing
            traced = TracingConfig("otlp", 1.0, "http://collector:4318/v1/traces")
            on = running.controller.sidecar_lookup("kpa:1", traced)(
                NS, {"app": "hello", "pod-template-hash": "a"}
            )
            assert on is not None and on.tracing == traced
            assert lookup(NS, {"app": "plain"}) is None  # not enrolled
            assert lookup("elsewhere", {"app": "hello"}) is None
            answer = await running.push("hello", 1.0)
            assert answer.status_code == 503 and "not the leader" in answer.json()["error"]
            assert "kpa-controller-leader" in answer.json()["error"]  # where pushes reach the leader
            await asyncio.sleep(0.3)  # nothing may happen: the absence under test
            assert running.service("hello") is None and running.replicas("hello") == 0
            writes = sum(kube.server.requests(verb) for verb in ("create", "patch", "update", "delete"))
            assert writes == 0
            await running.controller.became_leader()  # the seam an elector calls
            await wait_until(lambda: running.slice("hello") is not None, timeout=5)

    def seed(kube) -> None:
        seed_hello(kube)
        kube.apps.create_namespaced_deployment(NS, deployment("plain", replicas=1))
        kube.server.cluster.faults.reset_counts()

    run(body, seed)


def test_the_revision_service_carries_container_concurrency_and_timeout_for_an_activator_at_zero():
    serving = {"kpa-emulator.dev/container-concurrency": "3", "kpa-emulator.dev/timeout-seconds": "20"}

    async def body(kube) -> None:
        async with Running(kube) as running:

            def annotations() -> dict[str, str]:
                found = (running.service("hello") or {}).get("metadata", {}).get("annotations") or {}
                return {k: v for k, v in found.items() if k.startswith("kpa-emulator.dev/")}

            await wait_until(lambda: annotations() == serving, timeout=10, what=lambda: f"{annotations()}")
            changed = {**serving, "kpa-emulator.dev/timeout-seconds": "45"}  # not a scaling setting
            await asyncio.to_thread(
                kube.apps.patch_namespaced_deployment, "hello", NS, {"metadata": {"annotations": changed}}
            )
            await wait_until(lambda: annotations() == changed, timeout=5, what=lambda: f"{annotations()}")
            edited = {"metadata": {"annotations": {"kpa-emulator.dev/container-concurrency": "99"}}}
            await asyncio.to_thread(kube.core.patch_namespaced_service, "hello-kpa", NS, edited)
            await wait_until(lambda: annotations() == changed, timeout=5, what="someone's edit put back")

    def seed(kube) -> None:
        kube.core.create_namespaced_config_map(SYSTEM, config_map(ALLOW_ZERO))
        kube.apps.create_namespaced_deployment(NS, deployment("hello", {**FROM_ZERO, **serving}))

    run(body, seed)
