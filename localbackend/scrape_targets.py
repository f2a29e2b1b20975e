"""What a stock Prometheus should scrape on a `kpa up` stack, as a file_sd target file.

Pods come and go every few seconds under the KPA, so a static scrape config is wrong within a
minute. Prometheus' ``file_sd_configs`` re-reads a JSON file whenever it changes; ``kpa up`` keeps
one such file true. This module is the pure half: from what is running now to the file's text. The
text is deterministic (groups and targets sorted), so an unchanged stack writes nothing.

Target labels are ``job``, ``namespace``, ``revision`` and ``pod`` — Kubernetes service discovery's
usual names, none of which the metrics themselves carry (their labels are Knative's
``namespace_name``, ``revision_name``, ``pod_name``), so Prometheus never has to rename one to
``exported_*``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

STACK_JOB = "kpa-up"
QUEUE_PROXY_JOB = "queue-proxy"
USER_CONTAINER_JOB = "user-container"
# KServe's opt-in for scraping the model server itself (the user container), and its path override.
SCRAPE_ANNOTATION = "serving.kserve.io/enable-prometheus-scraping"
PATH_ANNOTATION = "prometheus.kserve.io/path"
DEFAULT_PATH = "/metrics"


@dataclass(frozen=True, slots=True)
class MetricsEndpoint:
    """One process's metrics endpoint: ``address`` is ``host:port``."""

    job: str
    address: str
    path: str = DEFAULT_PATH
    labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class PodPorts:
    """The ports of one running pod that serve metrics (0: not known yet)."""

    namespace: str
    revision: str
    pod: str
    queue_proxy_metrics_port: int
    user_port: int


def user_metrics_path(annotations: Mapping[str, str]) -> str | None:
    """The user container's metrics path when the revision opts in with KServe's annotation, else None."""
    if annotations.get(SCRAPE_ANNOTATION, "").strip().lower() != "true":
        return None
    path = annotations.get(PATH_ANNOTATION, DEFAULT_PATH).strip() or DEFAULT_PATH
    return path if path.startswith("/") else "/" + path


def stack_endpoints(
    admin_address: str, pods: Iterable[PodPorts], user_paths: Mapping[tuple[str, str], str | None]
) -> list[MetricsEndpoint]:
    """Every endpoint of the stack: its admin port (autoscaler and activator), each pod's
    queue-proxy, and each pod's user container where its revision opted in (``user_paths`` maps
    (namespace, revision) to the path, or None)."""
    endpoints = [MetricsEndpoint(STACK_JOB, admin_address)]
    for pod in pods:
        labels = {"namespace": pod.namespace, "revision": pod.revision, "pod": pod.pod}
        if pod.queue_proxy_metrics_port:
            address = f"127.0.0.1:{pod.queue_proxy_metrics_port}"
            endpoints.append(MetricsEndpoint(QUEUE_PROXY_JOB, address, labels=labels))
        path = user_paths.get((pod.namespace, pod.revision))
        if path is not None and pod.user_port:
            endpoints.append(MetricsEndpoint(USER_CONTAINER_JOB, f"127.0.0.1:{pod.user_port}", path, labels))
    return endpoints


def file_sd_text(endpoints: Iterable[MetricsEndpoint]) -> str:
    """The file_sd JSON: one group per endpoint (each has its own labels), sorted."""
    groups: list[dict[str, Any]] = []
    for e in sorted(endpoints, key=lambda e: (e.job, e.address, e.path)):
        labels = {"job": e.job, **dict(sorted(e.labels.items()))}
        if e.path != DEFAULT_PATH:
            labels["__metrics_path__"] = e.path
        groups.append({"targets": [e.address], "labels": labels})
    return json.dumps(groups, indent=1) + "\n"
