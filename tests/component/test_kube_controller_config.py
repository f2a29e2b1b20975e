"""`kpa controller`'s settings on the fake API server: a config-autoscaler edit applies live, a bad
ConfigMap or annotation is a Warning Event on the object (the last good settings stay, the controller
carries on), and a fixed annotation enrols its workload."""

from __future__ import annotations

import httpx
import pytest
from kube_controller_fixtures import ALLOW_ZERO, FROM_ZERO, NS, SYSTEM, Running, config_map, deployment, run
from waiting import wait_until

pytestmark = pytest.mark.timeout(60)


def seed(kube) -> None:
    kube.core.create_namespaced_config_map(SYSTEM, config_map({**ALLOW_ZERO, "stable-window": "60s"}))
    kube.apps.create_namespaced_deployment(NS, deployment("hello", FROM_ZERO))


def test_a_config_map_edit_changes_every_revisions_settings_without_a_restart():
    async def body(kube) -> None:
        async with Running(kube) as running:
            ref = running.revision("hello")
            await wait_until(lambda: running.slice("hello") is not None, timeout=10)
            assert running.controller.service.settings(ref).stable_window == 60
            new = {**ALLOW_ZERO, "stable-window": "30s", "container-concurrency-target-default": "10"}
            kube.core.patch_namespaced_config_map("config-autoscaler", SYSTEM, {"data": new})
            await wait_until(lambda: running.controller.service.settings(ref).stable_window == 30)
            assert running.controller.service.settings(ref).spec.target_value == 10 * 0.7
            await wait_until(lambda: running.events("hello", "SettingsChanged"))
            assert running.controller.service.revisions() == [ref]  # the same revision, updated in place

    run(body, seed)


@pytest.mark.parametrize(
    ("data", "named"),
    [
        pytest.param({"stable-window": "soon"}, 'config-autoscaler stable-window="soon"', id="bad value"),
        pytest.param({"stable-windw": "30s"}, "did you mean 'stable-window'", id="misspelt key"),
    ],
)
def test_a_bad_config_map_is_a_warning_event_on_it_and_the_last_good_config_stays(data, named):
    async def body(kube) -> None:
        async with Running(kube) as running, httpx.AsyncClient(base_url=running.url) as http:
            ref = running.revision("hello")
            await wait_until(lambda: running.slice("hello") is not None, timeout=10)
            kube.core.replace_namespaced_config_map("config-autoscaler", SYSTEM, config_map(data))
            await wait_until(lambda: running.events("config-autoscaler", "InvalidConfig", SYSTEM), timeout=5)
            [event] = running.events("config-autoscaler", "InvalidConfig", SYSTEM)
            assert event["type"] == "Warning" and named in event["message"]
            assert "the last good configuration stays in use" in event["message"]
            assert running.controller.service.settings(ref).stable_window == 60
            assert named in (await http.get("/status")).json()["config"]["error"]
            # Fixed: it applies, and the error is gone.
            kube.core.replace_namespaced_config_map(
                "config-autoscaler", SYSTEM, config_map({**ALLOW_ZERO, "stable-window": "20s"})
            )
            await wait_until(lambda: running.controller.service.settings(ref).stable_window == 20)
            assert (await http.get("/status")).json()["config"]["error"] is None

    run(body, seed)


def test_a_malformed_annotation_is_a_warning_event_and_the_revision_waits_while_others_scale():
    bad = {**FROM_ZERO, "autoscaling.knative.dev/target": "abc"}

    async def body(kube) -> None:
        async with Running(kube) as running:
            await wait_until(lambda: running.slice("hello") is not None, timeout=10)
            await wait_until(lambda: running.events("broken", "InvalidAutoscaling"), timeout=5)
            [event] = running.events("broken", "InvalidAutoscaling")
            assert event["type"] == "Warning"
            assert 'annotation autoscaling.knative.dev/target="abc"' in event["message"]
            assert "the revision is not scaled" in event["message"]
            assert running.controller.service.revisions() == [running.revision("hello")]
            assert running.slice("broken") is None
            # Fixed by the user: enrolled at once.
            fixed = {"metadata": {"annotations": {"autoscaling.knative.dev/target": "10"}}}
            kube.apps.patch_namespaced_deployment("broken", NS, fixed)
            await wait_until(lambda: running.slice("broken") is not None, timeout=5)
            # Broken again once scaled: the last good settings stay, and the user is told so.
            kube.apps.patch_namespaced_deployment("broken", NS, {"metadata": {"annotations": bad}})
            await wait_until(lambda: len(running.events("broken", "InvalidAutoscaling")) == 2, timeout=5)
            assert (
                "the last good settings stay in use"
                in running.events("broken", "InvalidAutoscaling")[1]["message"]
            )
            assert running.controller.service.settings(running.revision("broken")).spec.target_value == 7

    def seed_both(kube) -> None:
        seed(kube)
        kube.apps.create_namespaced_deployment(NS, deployment("broken", bad))

    run(body, seed_both)


def test_an_inference_service_asking_for_cpu_scaling_is_told_to_use_the_hpa():
    isvc = {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {"name": "cpu", "annotations": {"serving.kserve.io/autoscalerClass": "external"}},
        "spec": {"predictor": {"minReplicas": 0, "scaleMetric": "cpu"}},
    }
    labels = {"serving.kserve.io/inferenceservice": "cpu", "component": "predictor"}

    async def body(kube) -> None:
        async with Running(kube) as running:
            await wait_until(lambda: running.events("cpu", "InvalidAutoscaling"), timeout=10)
            [event] = running.events("cpu", "InvalidAutoscaling")
            assert event["involvedObject"]["kind"] == "InferenceService"
            assert "serving.kserve.io/autoscalerClass: hpa" in event["message"]
            assert running.slice("cpu-predictor") is None

    def seed_isvc(kube) -> None:
        seed(kube)
        kube.custom.create_namespaced_custom_object(
            "serving.kserve.io", "v1beta1", NS, "inferenceservices", isvc
        )
        kube.apps.create_namespaced_deployment(NS, deployment("cpu-predictor", **labels))

    run(body, seed_isvc)
