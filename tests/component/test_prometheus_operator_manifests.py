"""manifests/prometheus-operator rendered by a real kustomize: every ServiceMonitor reaches the port the
base's pods serve /metrics on, and the PodMonitor selects exactly the pods the webhook enrolls, at the
port the injected queue-proxy serves its metrics on (on the pod IP, not loopback)."""

from __future__ import annotations

from typing import Any

import pytest
from kustomize_objects import KUBECTL, NO_KUBECTL, Obj, model_name, of_kind, one, render, selects, typed

from fakecluster.patches import json_patch
from kubebackend import rbac
from kubebackend.sidecar import METRICS_PORT, QUEUE_PROXY, REVISION_LABEL, SidecarSpec, sidecar_patch

pytestmark = pytest.mark.skipif(KUBECTL is None, reason=NO_KUBECTL)

OPERATOR = "prometheus-operator"


def _container_ports(deployment: Obj) -> dict[str, int]:
    return {
        port["name"]: port["containerPort"]
        for container in deployment["spec"]["template"]["spec"]["containers"]
        for port in container.get("ports") or ()
    }


def test_it_renders_the_metrics_services_and_monitors_and_the_services_are_valid():
    objects = render(OPERATOR)
    assert sorted((o["kind"], o["metadata"]["name"]) for o in objects) == [
        ("PodMonitor", "kpa-queue-proxy"),
        ("Service", "kpa-activator-metrics"),
        ("Service", "kpa-controller-metrics"),
        ("ServiceMonitor", "kpa-activator"),
        ("ServiceMonitor", "kpa-controller"),
    ]
    for service in of_kind(objects, "Service"):
        assert typed(service, model_name(service)) == service
    assert {o["metadata"]["namespace"] for o in objects} == {"kpa-system"}


@pytest.mark.parametrize("name", [rbac.CONTROLLER, rbac.ACTIVATOR])
def test_each_service_monitor_scrapes_every_replica_where_its_pods_serve_metrics(name):
    monitor = one(render(OPERATOR), "ServiceMonitor", name)
    services = [*of_kind(render("base"), "Service"), *of_kind(render(OPERATOR), "Service")]
    chosen = [
        s for s in services
        if s["metadata"]["namespace"] == monitor["metadata"]["namespace"]
        and selects(monitor["spec"]["selector"], s["metadata"]["labels"])
    ]  # fmt: skip
    assert [s["metadata"]["name"] for s in chosen] == [f"{name}-metrics"]  # one Service: no double scrape
    (service,) = chosen
    (endpoint,) = monitor["spec"]["endpoints"]
    (port,) = [p for p in service["spec"]["ports"] if p["name"] == endpoint["port"]]
    deployment = one(render("base"), "Deployment", name)
    template = deployment["spec"]["template"]
    # Every replica, not only the leader: the Service selects the Deployment's pods by their own labels.
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    assert selects({"matchLabels": service["spec"]["selector"]}, template["metadata"]["labels"])
    container_port = _container_ports(deployment)[port["targetPort"]]
    annotations = template["metadata"]["annotations"]
    scraped_by_annotations = (int(annotations["prometheus.io/port"]), annotations["prometheus.io/path"])
    assert (container_port, endpoint["path"]) == scraped_by_annotations


def _enrolled_pod() -> dict[str, Any]:
    bare = {
        "metadata": {"name": "web-abc", "namespace": "demo", "labels": {"app": "web"}},
        "spec": {"containers": [{"name": "user", "image": "web", "ports": [{"containerPort": 8080}]}]},
    }
    spec = SidecarSpec("demo", "web", 4, 300, "kpa-emulator/kpa:0.1.0")
    return json_patch(bare, sidecar_patch(bare, spec))


def test_the_pod_monitor_scrapes_the_queue_proxy_the_webhook_injects_and_nothing_else():
    monitor = one(render(OPERATOR), "PodMonitor", "kpa-queue-proxy")
    assert monitor["spec"]["namespaceSelector"] == {"any": True}  # enrolled pods live in any namespace
    pod = _enrolled_pod()
    assert selects(monitor["spec"]["selector"], pod["metadata"]["labels"])
    assert pod["metadata"]["labels"][REVISION_LABEL] == "web"
    for deployment in of_kind(render("base"), "Deployment"):  # the control plane's own pods are not
        assert not selects(monitor["spec"]["selector"], deployment["spec"]["template"]["metadata"]["labels"])
    assert not selects(monitor["spec"]["selector"], {"app": "web"})  # a pod the webhook left alone
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    (sidecar,) = [c for c in pod["spec"]["containers"] if c["name"] == QUEUE_PROXY]
    ports = {p["name"]: p["containerPort"] for p in sidecar["ports"]}
    assert (ports[endpoint["port"]], endpoint["path"]) == (METRICS_PORT, "/metrics")
    env = {e["name"]: e.get("value") for e in sidecar["env"]}
    assert env["KPA_ADMIN_HOST"] == "0.0.0.0"  # the metrics port listens on the pod IP
