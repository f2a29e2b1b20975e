"""The webhook's queue-proxy injection: what the pod looks like after the patch, and that our own
queue-proxy accepts the environment it is given."""

import copy
import dataclasses
import json
from typing import Any

import pytest

from fakecluster.patches import json_patch
from kubebackend.sidecar import SidecarSpec, revision_of_pod, serving_probe, sidecar_patch
from queueproxy.config import load_config
from tracing.config import TracingConfig, parse_tracing

SPEC = SidecarSpec(
    namespace="ml", revision="resnet", container_concurrency=4, timeout_seconds=120, image="kpa:dev"
)


def pod(**user: Any) -> dict[str, Any]:
    container = {"name": "kserve-container", "image": "predictor:1", **user}
    sidecar = {"name": "agent", "image": "agent:1"}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"generateName": "resnet-predictor-", "labels": {"app": "isvc.resnet-predictor"}},
        "spec": {"containers": [sidecar, container]},
    }


def injected(original: dict[str, Any]) -> dict[str, Any]:
    return json_patch(copy.deepcopy(original), sidecar_patch(original, SPEC))


def env_of(container: dict[str, Any]) -> dict[str, str]:
    def value(e: dict[str, Any]) -> str:
        return e["value"] if "value" in e else f"<{e['valueFrom']['fieldRef']['fieldPath']}>"

    return {e["name"]: value(e) for e in container["env"]}


def test_injection_adds_a_queue_proxy_the_queue_proxy_itself_accepts():
    result = injected(pod(ports=[{"containerPort": 9000}]))
    names = [c["name"] for c in result["spec"]["containers"]]
    assert names == ["agent", "kserve-container", "queue-proxy"]
    queue = result["spec"]["containers"][2]
    env = env_of(queue)
    assert (env["CONTAINER_CONCURRENCY"], env["USER_PORT"], env["REVISION_TIMEOUT_SECONDS"]) == (
        "4",
        "9000",
        "120",
    )
    assert env["SERVING_POD"] == "<metadata.name>"
    config = load_config({k: v for k, v in env.items() if not v.startswith("<")}, {"host": "0.0.0.0"})
    assert (config.container_concurrency, config.user_port, config.revision_timeout) == (4, 9000, 120.0)
    assert (config.stats_host, config.admin_host) == ("0.0.0.0", "0.0.0.0")  # reachable by the controller
    assert config.probes[0].describe() == "tcp 127.0.0.1:9000"
    assert queue["readinessProbe"]["httpGet"]["httpHeaders"] == [
        {"name": "K-Network-Probe", "value": "queue"}
    ]
    restricted = queue["securityContext"]
    assert restricted["runAsNonRoot"] and not restricted["allowPrivilegeEscalation"]
    assert restricted["capabilities"] == {"drop": ["ALL"]} and queue["resources"]["requests"]["cpu"] == "25m"


def test_user_container_drains_through_the_queue_proxy_and_gets_the_revision_timeout_as_grace():
    result = injected(pod(env=[{"name": "MODEL", "value": "resnet"}]))
    user = result["spec"]["containers"][1]
    assert user["lifecycle"]["preStop"] == {"httpGet": {"port": 8022, "path": "/wait-for-drain"}}
    assert env_of(user) == {"MODEL": "resnet", "PORT": "8080", "K_REVISION": "resnet"}
    assert result["spec"]["terminationGracePeriodSeconds"] == 120
    assert result["metadata"]["labels"] == {
        "app": "isvc.resnet-predictor",
        "kpa-emulator.dev/revision": "resnet",
    }


def test_http_readiness_probe_moves_into_the_queue_proxy_with_its_timing():
    probe = {"httpGet": {"path": "/v2/health/ready", "port": 8080}, "periodSeconds": 5, "failureThreshold": 3}
    result = injected(pod(readinessProbe=probe))
    user, queue = result["spec"]["containers"][1:]
    assert "readinessProbe" not in user
    moved = json.loads(env_of(queue)["SERVING_READINESS_PROBE"])
    assert moved == {
        "httpGet": {"path": "/v2/health/ready", "port": 8080, "host": "127.0.0.1", "scheme": "HTTP"},
        "periodSeconds": 5,
        "failureThreshold": 3,
    }
    assert queue["readinessProbe"]["periodSeconds"] == 5
    config = load_config({"SERVING_READINESS_PROBE": json.dumps(moved)})
    assert config.probes[0].describe() == "http GET http://127.0.0.1:8080/v2/health/ready"


@pytest.mark.parametrize(
    ("probe", "expected"),
    [
        pytest.param(
            None, {"tcpSocket": {"port": 8080, "host": "127.0.0.1"}, "successThreshold": 1}, id="no probe"
        ),
        pytest.param(
            {"tcpSocket": {"port": 7000}},
            {"tcpSocket": {"port": 7000, "host": "127.0.0.1"}, "successThreshold": 1},
            id="tcp probe keeps its port",
        ),
        pytest.param(
            {"exec": {"command": ["true"]}},
            {"tcpSocket": {"port": 8080, "host": "127.0.0.1"}, "successThreshold": 1},
            id="exec becomes tcp on the user port",
        ),
        pytest.param(
            {"httpGet": {"port": "http"}},
            {"httpGet": {"path": "/", "port": 8080, "host": "127.0.0.1", "scheme": "HTTP"}},
            id="named port falls back to the user port",
        ),
    ],
)
def test_serving_probe_rewrites_like_knative(probe, expected):
    assert serving_probe(probe, 8080) == expected


def test_exec_probe_stays_with_kubelet():
    result = injected(pod(readinessProbe={"exec": {"command": ["cat", "/tmp/ready"]}}))
    assert result["spec"]["containers"][1]["readinessProbe"] == {"exec": {"command": ["cat", "/tmp/ready"]}}


def test_injection_is_idempotent_and_leaves_a_hand_added_sidecar_alone():
    once = injected(pod())
    assert sidecar_patch(once, SPEC) == []
    assert sidecar_patch({"spec": {"containers": []}}, SPEC) == []


def test_pod_without_labels_gets_the_revision_label():
    original = pod()
    del original["metadata"]["labels"]
    assert injected(original)["metadata"]["labels"] == {"kpa-emulator.dev/revision": "resnet"}


def test_pod_belongs_to_the_revision_whose_selector_its_labels_satisfy():
    selectors = [
        ("web", {"app": "web"}),
        ("resnet", {"app": "isvc.resnet-predictor", "component": "predictor"}),
    ]
    assert (
        revision_of_pod({"app": "isvc.resnet-predictor", "component": "predictor", "x": "y"}, selectors)
        == "resnet"
    )
    assert revision_of_pod({"app": "isvc.resnet-predictor"}, selectors) is None  # a partial match is no match
    assert revision_of_pod({"app": "other"}, selectors) is None
    assert revision_of_pod({}, [("empty", {})]) is None  # an empty selector matches nothing here


def test_the_queue_proxy_gets_config_tracing_as_values_it_reads_back_and_none_when_off():
    """The controller read config-tracing in its own namespace; a pod cannot reference it from another,
    so the settings travel as plain values, which the queue-proxy parses into the same configuration."""
    off = env_of(injected(pod())["spec"]["containers"][2])
    assert not [name for name in off if name.startswith(("TRACING_CONFIG_", "OTEL_"))]
    assert load_config({k: v for k, v in off.items() if not v.startswith("<")}, {}).tracing == TracingConfig()
    traced = parse_tracing({"backend": "otlp", "otlp-endpoint": "http://collector.obs:4318/v1/traces",
                            "sample-rate": "0.25"})  # fmt: skip
    spec = dataclasses.replace(SPEC, tracing=traced)
    original = pod()
    queue = json_patch(copy.deepcopy(original), sidecar_patch(original, spec))["spec"]["containers"][2]
    env = env_of(queue)
    assert {k: v for k, v in env.items() if k.startswith(("TRACING_CONFIG_", "OTEL_"))} == {
        "TRACING_CONFIG_BACKEND": "otlp",
        "TRACING_CONFIG_SAMPLE_RATE": "0.25",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector.obs:4318/v1/traces",
    }
    assert load_config({k: v for k, v in env.items() if not v.startswith("<")}, {}).tracing == traced
