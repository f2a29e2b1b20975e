"""Which Deployments and InferenceServices the controller scales, and the KPA settings they map to."""

from typing import Any

import pytest

from autoscaler.revision import settings_from
from kubebackend.enrollment import (
    EnrollmentError,
    enrollment_of_deployment,
    enrollment_of_inference_service,
    is_enrolled_deployment,
    is_enrolled_inference_service,
    selector_text,
)

KPA = {"autoscaling.knative.dev/class": "kpa.autoscaling.knative.dev"}


def deployment(annotations: dict[str, str], labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "shop", "annotations": annotations, "labels": labels or {}},
    }


def isvc(predictor: dict[str, Any], annotations: dict[str, str] | None = None) -> dict[str, Any]:
    base = {"serving.kserve.io/autoscalerClass": "external"}
    return {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {"name": "resnet", "namespace": "ml", "annotations": {**base, **(annotations or {})}},
        "spec": {"predictor": {"model": {"modelFormat": {"name": "pytorch"}}, **predictor}},
    }


@pytest.mark.parametrize(
    ("obj", "enrolled"),
    [
        pytest.param(deployment(KPA), True, id="kpa-class deployment"),
        pytest.param(deployment({}), False, id="no class annotation"),
        pytest.param(
            deployment({"autoscaling.knative.dev/class": "hpa.autoscaling.knative.dev"}),
            False,
            id="hpa class",
        ),
        pytest.param(
            deployment(KPA, {"serving.kserve.io/inferenceservice": "resnet"}),
            False,
            id="kserve-made predictor is enrolled through its InferenceService",
        ),
    ],
)
def test_deployment_enrols_only_with_the_kpa_class_and_no_kserve_owner(obj, enrolled):
    assert is_enrolled_deployment(obj) is enrolled


@pytest.mark.parametrize(
    ("annotations", "enrolled"),
    [
        pytest.param({}, True, id="external, default mode"),
        pytest.param({"serving.kserve.io/deploymentMode": "RawDeployment"}, True, id="legacy RawDeployment"),
        pytest.param({"serving.kserve.io/deploymentMode": "Standard"}, True, id="Standard"),
        pytest.param({"serving.kserve.io/deploymentMode": "Serverless"}, False, id="Knative owns Serverless"),
        pytest.param({"serving.kserve.io/autoscalerClass": "hpa"}, False, id="hpa class"),
    ],
)
def test_inference_service_enrols_with_the_external_class_in_a_raw_mode(annotations, enrolled):
    assert is_enrolled_inference_service(isvc({}, annotations)) is enrolled


def test_deployment_keeps_knative_annotations_and_reads_concurrency_and_timeout_from_ours():
    got = enrollment_of_deployment(
        deployment(
            {
                **KPA,
                "autoscaling.knative.dev/min-scale": "0",
                "autoscaling.knative.dev/target": "4",
                "kpa-emulator.dev/container-concurrency": "8",
                "kpa-emulator.dev/timeout-seconds": "60",
                "unrelated/annotation": "x",
            }
        )
    )
    assert (got.kind, got.namespace, got.name) == ("Deployment", "shop", "web")
    assert got.annotations == {
        **KPA,
        "autoscaling.knative.dev/min-scale": "0",
        "autoscaling.knative.dev/target": "4",
    }
    assert (got.container_concurrency, got.timeout_seconds) == (8, 60)
    settings = settings_from(got.annotations, None, got.container_concurrency)
    assert (settings.min_scale, settings.container_concurrency) == (0, 8)
    assert settings.spec.target_value == pytest.approx(4 * 0.7)  # target x default utilization


@pytest.mark.parametrize(
    ("annotation", "value", "says"),
    [
        pytest.param(
            "kpa-emulator.dev/container-concurrency", "many", "not a whole number", id="cc not a number"
        ),
        pytest.param("kpa-emulator.dev/container-concurrency", "-1", "at least 0", id="cc negative"),
        pytest.param("kpa-emulator.dev/timeout-seconds", "0", "at least 1", id="timeout zero"),
    ],
)
def test_deployment_bad_annotation_names_the_object_key_and_value(annotation, value, says):
    with pytest.raises(EnrollmentError) as caught:
        enrollment_of_deployment(deployment({**KPA, annotation: value}))
    message = str(caught.value)
    assert "Deployment shop/web" in message and f'{annotation}="{value}"' in message and says in message


@pytest.mark.parametrize(
    ("predictor", "annotations", "expected"),
    [
        pytest.param({}, {}, {"min-scale": "1"}, id="KServe's default minReplicas is 1"),
        pytest.param({"minReplicas": 0}, {}, {"min-scale": "0"}, id="minReplicas 0 scales to zero"),
        pytest.param(
            {"minReplicas": 2, "maxReplicas": 1},
            {},
            {"min-scale": "2", "max-scale": "2"},
            id="maxReplicas raised to minReplicas as KServe does",
        ),
        pytest.param(
            {"minReplicas": 0, "maxReplicas": 0}, {}, {"min-scale": "0"}, id="maxReplicas 0 no limit"
        ),
        pytest.param(
            {"scaleMetric": "rps", "scaleTarget": 50},
            {},
            {"min-scale": "1", "metric": "rps", "target": "50"},
            id="scaleMetric and scaleTarget",
        ),
        pytest.param(
            {},
            {"autoscaling.knative.dev/min-scale": "0", "autoscaling.knative.dev/window": "30s"},
            {"min-scale": "0", "window": "30s"},
            id="Knative annotations on the InferenceService",
        ),
        pytest.param(
            {"minReplicas": 0},
            {"autoscaling.knative.dev/min-scale": "0"},
            {"min-scale": "0"},
            id="field and annotation agreeing",
        ),
    ],
)
def test_inference_service_fields_map_onto_knative_annotations(predictor, annotations, expected):
    got = enrollment_of_inference_service(isvc(predictor, annotations))
    assert got.annotations == {f"autoscaling.knative.dev/{k}": v for k, v in expected.items()}
    settings_from(got.annotations, None, got.container_concurrency)  # the autoscaler accepts them


def test_inference_service_predictor_is_found_by_kserve_labels_with_its_concurrency_and_timeout():
    got = enrollment_of_inference_service(isvc({"containerConcurrency": 4, "timeout": 90}))
    assert (got.kind, got.namespace, got.name) == ("InferenceService", "ml", "resnet")
    assert (got.container_concurrency, got.timeout_seconds) == (4, 90)
    assert selector_text(got.selector) == "component=predictor,serving.kserve.io/inferenceservice=resnet"


@pytest.mark.parametrize(
    ("predictor", "annotations", "says"),
    [
        pytest.param({"scaleMetric": "cpu"}, {}, "autoscalerClass: hpa", id="cpu is the HPA's"),
        pytest.param({"minReplicas": -1}, {}, "spec.predictor.minReplicas", id="negative minReplicas"),
        pytest.param({"maxReplicas": "lots"}, {}, "not a whole number", id="maxReplicas not a number"),
        pytest.param({"containerConcurrency": True}, {}, "not a whole number", id="boolean concurrency"),
        pytest.param(
            {"minReplicas": 0},
            {"autoscaling.knative.dev/min-scale": "2"},
            "disagree; set one of them",
            id="field and annotation disagreeing",
        ),
    ],
)
def test_inference_service_bad_field_names_the_field_and_the_fix(predictor, annotations, says):
    with pytest.raises(EnrollmentError) as caught:
        enrollment_of_inference_service(isvc(predictor, annotations))
    assert "InferenceService ml/resnet" in str(caught.value) and says in str(caught.value)


def test_inference_service_without_a_predictor_is_refused():
    obj = isvc({})
    obj["spec"] = {}
    with pytest.raises(EnrollmentError, match=r"spec\.predictor is missing"):
        enrollment_of_inference_service(obj)
