"""The objects bench_kube_controller.py puts on the fake cluster: enrolled Deployments, the webhook
configuration and the activator Deployment (from manifests/base, as the e2e tests install them).

Kept apart from the benchmark's measuring code so each file has one job.
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path
from typing import Any

import yaml

from fakecluster.resources import ENDPOINTSLICES, SERVICES
from fakecluster.resources import MUTATING_WEBHOOKS as WEBHOOKS

PY = sys.executable
ROOT = Path(__file__).resolve().parents[1]
NS, SYSTEM = "bench", "kpa-system"
KPA_IMAGE = "kpa-emulator/kpa:0.1.0"
WAKE_TIMEOUT_S = 10
ENROLLED = {
    "autoscaling.knative.dev/class": "kpa.autoscaling.knative.dev",
    "autoscaling.knative.dev/initial-scale": "0",
}


def deployment(name: str, template: dict[str, Any] | None = None) -> dict[str, Any]:
    template = template or {
        "spec": {"containers": [{"name": "user", "image": "user:1", "command": ["true"]}]}
    }
    template = copy.deepcopy(template)
    template.setdefault("metadata", {})["labels"] = {"app": name}
    annotations = {**ENROLLED, "kpa-emulator.dev/timeout-seconds": str(WAKE_TIMEOUT_S)}
    return {
        "metadata": {"name": name, "labels": {"app": name}, "annotations": annotations},
        "spec": {"replicas": 0, "selector": {"matchLabels": {"app": name}}, "template": template},
    }


def wake_deployment(name: str, site: Path) -> dict[str, Any]:
    """A revision whose pod is ``python -m http.server``; the controller's webhook adds the queue-proxy."""
    user = {
        "name": "user",
        "image": "python:3.11-slim",
        "command": [PY, "-m", "http.server", "8080", "--bind", "0.0.0.0", "--directory", str(site)],
        "ports": [{"containerPort": 8080}],
        "readinessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 1},
    }
    return deployment(name, {"spec": {"containers": [user]}})


def webhook_objects(port: int) -> list[tuple[Any, dict[str, Any]]]:
    """manifests/base/webhook.yaml's configuration as it is (it calls Service kpa-system/kpa-controller
    on 443), and that Service without a selector, its EndpointSlice naming the controller process on
    the node: the API server reaches the webhook as on a cluster, by the name its certificate covers."""
    webhook = next(
        doc
        for doc in yaml.safe_load_all((ROOT / "manifests/base/webhook.yaml").read_text())
        if doc and doc["kind"] == "MutatingWebhookConfiguration"
    )
    service = {
        "metadata": {"name": "kpa-controller"},
        "spec": {"ports": [{"name": "https-webhook", "port": 443, "targetPort": port}]},
    }
    endpoints = {
        "metadata": {
            "name": "kpa-controller-node",
            "labels": {"kubernetes.io/service-name": "kpa-controller"},
        },
        "addressType": "IPv4",
        "endpoints": [{"addresses": ["127.0.0.1"], "conditions": {"ready": True}}],
        "ports": [{"name": "https-webhook", "port": port, "protocol": "TCP"}],
    }
    return [(WEBHOOKS, webhook), (SERVICES, service), (ENDPOINTSLICES, endpoints)]


def activator_objects(controller_port: int, kubeconfig: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    labels = {"app": "kpa-activator"}
    container = {
        "name": "activator",
        "image": KPA_IMAGE,
        "args": [
            "activator", "--kubernetes", f"--kubeconfig={kubeconfig}", "--host=0.0.0.0", "--port=8012",
            "--admin-host=0.0.0.0", "--admin-port=8085",
            f"--autoscaler-url=http://$(HOST_IP):{controller_port}/stats",
        ],
        "env": [
            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "HOST_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.hostIP"}}},
        ],
        "ports": [{"name": "http", "containerPort": 8012}],
        "readinessProbe": {
            "httpGet": {
                "path": "/", "port": "http", "httpHeaders": [{"name": "K-Kubelet-Probe", "value": "a"}],
            },
            "periodSeconds": 1,
        },
    }  # fmt: skip
    return (
        {
            "metadata": {"name": "kpa-activator", "labels": labels},
            "spec": {
                "replicas": 2,
                "selector": {"matchLabels": labels},
                "template": {"metadata": {"labels": labels}, "spec": {"containers": [container]}},
            },
        },
        {
            "metadata": {"name": "kpa-activator"},
            "spec": {"selector": labels, "ports": [{"name": "http", "port": 8012, "targetPort": "http"}]},
        },
    )
