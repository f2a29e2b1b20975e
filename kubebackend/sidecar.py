"""The queue-proxy sidecar the admission webhook adds to an enrolled revision's pods: pure.

KServe generates the predictor Deployment, so a user cannot add a container there by hand; the
webhook does it at pod creation, as Knative's revision reconciler does when it builds a Deployment
(kubernetes-wire.md 5.1): the user container's readiness probe moves into the queue-proxy (which
answers kubelet's ``K-Network-Probe: queue`` probe by running it), the user container drains through
the queue-proxy's ``/wait-for-drain`` before it stops, and the pod's grace period is the revision
timeout so an in-flight request can finish. The queue-proxy's tracing settings (``config-tracing``, read
by the controller in its own namespace) are copied into the sidecar's environment as values: a pod
cannot reference a ConfigMap in another namespace.

:func:`sidecar_patch` returns RFC 6902 operations; :func:`revision_of_pod` says which enrolled
revision a new pod belongs to by matching its labels against the revisions' Deployment selectors.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from queueproxy.payload_events import INFERENCE_SERVICE_ENV, LoggerSpec
from tracing.config import TracingConfig

QUEUE_PROXY = "queue-proxy"
KSERVE_CONTAINER = "kserve-container"  # KServe's name for the model server container
REVISION_LABEL = "kpa-emulator.dev/revision"
QUEUE_PORT = 8012
ADMIN_PORT = 8022
STATS_PORT = 9090
METRICS_PORT = 9091
DEFAULT_USER_PORT = 8080
_PROBE_TIMING = (
    "initialDelaySeconds",
    "periodSeconds",
    "timeoutSeconds",
    "successThreshold",
    "failureThreshold",
)


@dataclass(frozen=True, slots=True)
class SidecarSpec:
    """What the injected queue-proxy needs to know about its revision and where its image is."""

    namespace: str
    revision: str
    container_concurrency: int
    timeout_seconds: int
    image: str
    logger: LoggerSpec | None = None  # KServe's payload logger, mapped to PAYLOAD_LOGGER_* env
    inference_service: str = ""  # the events' ce-inferenceservicename: the enrolling object's name
    tracing: TracingConfig = field(default_factory=TracingConfig)  # config-tracing as TRACING_CONFIG_* env


def revision_of_pod(
    labels: Mapping[str, str], selectors: Iterable[tuple[str, Mapping[str, str]]]
) -> str | None:
    """The revision whose Deployment selector (``matchLabels``) the pod's labels satisfy, if any."""
    for revision, match in selectors:
        if match and all(labels.get(key) == value for key, value in match.items()):
            return revision
    return None


def _escape(key: str) -> str:
    """A JSON Pointer segment (RFC 6901): ``~`` and ``/`` escaped."""
    return key.replace("~", "~0").replace("/", "~1")


def _user_index(containers: list[Mapping[str, Any]]) -> int:
    for index, container in enumerate(containers):
        if container.get("name") == KSERVE_CONTAINER:
            return index
    return 0


def _user_port(container: Mapping[str, Any]) -> int:
    for port in container.get("ports") or ():
        if isinstance(port, Mapping) and isinstance(port.get("containerPort"), int):
            return int(port["containerPort"])
    return DEFAULT_USER_PORT


def serving_probe(probe: Mapping[str, Any] | None, user_port: int) -> dict[str, Any]:
    """The user probe as the queue-proxy runs it (``SERVING_READINESS_PROBE``): Knative's rewrite.

    Host pinned to loopback, the port defaulted to the user port, HTTP as the default scheme, an
    exec probe (which kubelet would run in the container) turned into a TCP check of the port, and
    no probe at all into Knative's default TCP probe with one success.
    """
    timing = {key: probe[key] for key in _PROBE_TIMING if probe and probe.get(key)}
    if probe and isinstance(probe.get("httpGet"), Mapping):
        get = dict(probe["httpGet"])
        port = get.get("port") if isinstance(get.get("port"), int) else user_port
        http = {
            "path": get.get("path") or "/",
            "port": port,
            "host": "127.0.0.1",
            "scheme": get.get("scheme") or "HTTP",
        }
        if get.get("httpHeaders"):
            http["httpHeaders"] = get["httpHeaders"]
        return {"httpGet": http, **timing}
    tcp_port = user_port
    if (
        probe
        and isinstance(probe.get("tcpSocket"), Mapping)
        and isinstance(probe["tcpSocket"].get("port"), int)
    ):
        tcp_port = probe["tcpSocket"]["port"]
    return {"tcpSocket": {"port": tcp_port, "host": "127.0.0.1"}, **({"successThreshold": 1} | timing)}


def _env(name: str, value: str) -> dict[str, Any]:
    return {"name": name, "value": value}


def _field(name: str, path: str) -> dict[str, Any]:
    return {"name": name, "valueFrom": {"fieldRef": {"fieldPath": path}}}


def _logger_env(spec: SidecarSpec) -> list[dict[str, Any]]:
    if spec.logger is None:
        return []
    env = [_env(name, value) for name, value in spec.logger.env().items()]
    return [*env, _env(INFERENCE_SERVICE_ENV, spec.inference_service or spec.revision)]


def queue_proxy_container(
    spec: SidecarSpec, user_port: int, probe: Mapping[str, Any] | None
) -> dict[str, Any]:
    """The queue-proxy container: Knative's environment, ports and probe, bound for in-cluster use."""
    timing = {key: probe[key] for key in _PROBE_TIMING if probe and probe.get(key)}
    return {
        "name": QUEUE_PROXY,
        "image": spec.image,
        # The user container is the pod's loopback, spelled out (it is the default) so that the pod
        # spec names every address it uses: the fake cluster's kubelet maps loopback to the pod IP.
        "args": ["queue-proxy", "--host", "0.0.0.0", "--user-host", "127.0.0.1"],
        "env": [
            _env("SERVING_NAMESPACE", spec.namespace),
            _env("SERVING_REVISION", spec.revision),
            _env("SERVING_CONFIGURATION", spec.revision),
            _env("CONTAINER_CONCURRENCY", str(spec.container_concurrency)),
            _env("QUEUE_SERVING_PORT", str(QUEUE_PORT)),
            _env("USER_PORT", str(user_port)),
            _env("REVISION_TIMEOUT_SECONDS", str(spec.timeout_seconds)),
            _env(
                "SERVING_READINESS_PROBE", json.dumps(serving_probe(probe, user_port), separators=(",", ":"))
            ),
            # The controller scrapes the pod IP and kubelet calls /wait-for-drain there: not loopback.
            _env("KPA_STATS_HOST", "0.0.0.0"),
            _env("KPA_ADMIN_HOST", "0.0.0.0"),
            _field("SERVING_POD", "metadata.name"),
            _field("SERVING_POD_IP", "status.podIP"),
            *_logger_env(spec),
            *(_env(name, value) for name, value in spec.tracing.to_env().items()),
        ],
        "ports": [
            {"name": "queue-port", "containerPort": QUEUE_PORT, "protocol": "TCP"},
            {"name": "http-autometric", "containerPort": STATS_PORT, "protocol": "TCP"},
            {"name": "http-usermetric", "containerPort": METRICS_PORT, "protocol": "TCP"},
        ],
        "readinessProbe": {
            "httpGet": {"port": QUEUE_PORT, "httpHeaders": [{"name": "K-Network-Probe", "value": "queue"}]},
            **timing,
        },
        # Knative's queue-proxy request (25m CPU) and what the restricted Pod Security Standard asks,
        # so namespaces that enforce it still admit enrolled pods.
        "resources": {"requests": {"cpu": "25m", "memory": "64Mi"}, "limits": {"memory": "256Mi"}},
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
    }


def sidecar_patch(pod: Mapping[str, Any], spec: SidecarSpec) -> list[dict[str, Any]]:
    """JSON Patch operations that turn ``pod`` into a pod with its queue-proxy; [] if it has one.

    Idempotent on purpose: a webhook may be called again for the same pod (reinvocation), and a
    plain Deployment may carry the sidecar by hand.
    """
    pod_spec = pod.get("spec") or {}
    containers = list(pod_spec.get("containers") or [])
    if not containers or any(c.get("name") == QUEUE_PROXY for c in containers):
        return []
    index = _user_index(containers)
    user = containers[index]
    user_port = _user_port(user)
    probe = user.get("readinessProbe")
    if probe is not None and not isinstance(probe, Mapping):
        probe = None
    ops: list[dict[str, Any]] = [
        {"op": "add", "path": "/spec/containers/-", "value": queue_proxy_container(spec, user_port, probe)},
        {"op": "add", "path": "/spec/terminationGracePeriodSeconds", "value": spec.timeout_seconds},
    ]
    base = f"/spec/containers/{index}"
    if user.get("readinessProbe") is not None and not (probe and "exec" in probe):
        ops.append({"op": "remove", "path": f"{base}/readinessProbe"})  # exec probes stay with kubelet
    lifecycle = dict(user.get("lifecycle") or {})
    lifecycle["preStop"] = {"httpGet": {"port": ADMIN_PORT, "path": "/wait-for-drain"}}
    ops.append({"op": "add", "path": f"{base}/lifecycle", "value": lifecycle})
    env_names = {e.get("name") for e in user.get("env") or ()}
    extra = [
        _env(n, v) for n, v in (("PORT", str(user_port)), ("K_REVISION", spec.revision)) if n not in env_names
    ]
    if extra and user.get("env"):
        ops += [{"op": "add", "path": f"{base}/env/-", "value": e} for e in extra]
    elif extra:
        ops.append({"op": "add", "path": f"{base}/env", "value": extra})
    labels = (pod.get("metadata") or {}).get("labels")
    if labels:
        ops.append(
            {"op": "add", "path": f"/metadata/labels/{_escape(REVISION_LABEL)}", "value": spec.revision}
        )
    else:
        ops.append({"op": "add", "path": "/metadata/labels", "value": {REVISION_LABEL: spec.revision}})
    return ops
