"""What an activator on Kubernetes holds about the cluster, read from the objects' JSON: pure.

The activator (``kpa activator --kubernetes``) fronts every revision the controller scales. From
three watched collections it learns, per revision:

* **that it exists**: the controller's public Service of the revision (labelled
  ``kpa-emulator.dev/revision=<revision>``, present even at zero) or any unfinished pod carrying that
  label (the sidecar webhook adds it to every pod of an enrolled revision);
* **its settings**: container concurrency and timeout from the queue-proxy environment of its pods
  (``CONTAINER_CONCURRENCY``, ``REVISION_TIMEOUT_SECONDS``: what the webhook injected, what the
  queue-proxies enforce; the newest ready pod first), else from the Service's annotations
  ``kpa-emulator.dev/container-concurrency`` / ``timeout-seconds`` (the Deployment's annotation names,
  read by ``kubebackend.enrollment``), else Knative's defaults (unlimited, 300 s);
* **its endpoints**: its Ready pods (phase Running, Ready condition True, not being deleted, an IP)
  at ``podIP:8012``, the queue-proxy's serving port (``QUEUE_SERVING_PORT`` when the pod sets it).

And its own place among the activators, as Knative's activator computes it (kubernetes-wire.md §5.3):
the ready addresses of the ``kpa-activator`` Service's EndpointSlices, sorted as strings; its index
is the position of its own pod IP there (found by IP, or by the endpoint's ``targetRef`` pod name),
the count is their number; an activator not in the list uses every pod (index -1).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from activator.config import DEFAULT_TIMEOUT_SECONDS, RevisionConfig
from autoscaler.stat import RevisionKey
from kubebackend.enrollment import EnrollmentError, enrollment_of_deployment
from kubebackend.sidecar import QUEUE_PORT, QUEUE_PROXY, REVISION_LABEL

Object = Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class RevisionState:
    """What the activator should hold for one revision; ``problems`` are values it could not use."""

    config: RevisionConfig
    endpoints: tuple[str, ...]
    settings_from: str  # which object the settings were read from, for the log
    problems: tuple[str, ...] = ()


def _meta(obj: Object) -> Object:
    meta = obj.get("metadata")
    return meta if isinstance(meta, Mapping) else {}


def revision_of(obj: Object) -> str | None:
    """The revision an object is labelled with, if any."""
    value = (_meta(obj).get("labels") or {}).get(REVISION_LABEL)
    return str(value) if value else None


def _finished(pod: Object) -> bool:
    return (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed")


def is_ready(pod: Object) -> bool:
    """Running, Ready, not being deleted, and with an IP: a pod to send requests to."""
    status = pod.get("status") or {}
    conditions = status.get("conditions") or []
    return (
        status.get("phase") == "Running"
        and bool(status.get("podIP"))
        and not _meta(pod).get("deletionTimestamp")
        and any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)
    )


def _queue_proxy_env(pod: Object) -> dict[str, str]:
    for container in (pod.get("spec") or {}).get("containers") or []:
        if container.get("name") == QUEUE_PROXY:
            return {str(e.get("name")): str(e["value"]) for e in container.get("env") or [] if "value" in e}
    return {}


def queue_address(pod: Object) -> str:
    """``podIP:port`` of the pod's queue-proxy serving port."""
    port = _queue_proxy_env(pod).get("QUEUE_SERVING_PORT", "")
    return f"{(pod.get('status') or {}).get('podIP')}:{int(port) if port.isdigit() else QUEUE_PORT}"


def _pod_settings(pod: Object) -> tuple[int, float] | str | None:
    """(cc, timeout) from the pod's queue-proxy env; a message when a value is bad; None without one."""
    env = _queue_proxy_env(pod)
    if "CONTAINER_CONCURRENCY" not in env:
        return None
    where = f"pod {_meta(pod).get('namespace')}/{_meta(pod).get('name')} queue-proxy env"
    cc, timeout = (
        env["CONTAINER_CONCURRENCY"],
        env.get("REVISION_TIMEOUT_SECONDS", str(DEFAULT_TIMEOUT_SECONDS)),
    )
    try:
        settings = int(cc), float(timeout)
    except ValueError:
        return f"{where}: CONTAINER_CONCURRENCY={cc!r} REVISION_TIMEOUT_SECONDS={timeout!r}: not numbers"
    if settings[0] < 0 or not settings[1] > 0:
        return (
            f"{where}: CONTAINER_CONCURRENCY={cc!r} must be >= 0 and REVISION_TIMEOUT_SECONDS={timeout!r} > 0"
        )
    return settings


def _newest_first(pod: Object) -> tuple[bool, str]:
    return not is_ready(pod), "".join(
        chr(0x10FFFF - ord(c)) for c in str(_meta(pod).get("creationTimestamp", ""))
    )


def revision_state(key: RevisionKey, pods: Iterable[Object], service: Object | None) -> RevisionState | None:
    """What to hold for revision ``key`` given its labelled pods and its Service; None when it is gone.

    Raises ActivatorConfigError (from RevisionConfig) when the revision's name is not one the
    activator can route to (not a DNS label).
    """
    live = [pod for pod in pods if revision_of(pod) == key.name and not _finished(pod)]
    if service is None and not live:
        return None
    problems: list[str] = []
    settings: tuple[int, float] | None = None
    source = "defaults"
    for pod in sorted(live, key=_newest_first):
        found = _pod_settings(pod)
        if isinstance(found, str):
            problems.append(found)
        elif found is not None:
            settings, source = found, f"pod {_meta(pod).get('name')}"
            break
    if settings is None and service is not None:
        annotations = _meta(service).get("annotations") or {}
        try:
            enrollment = enrollment_of_deployment(service)
        except EnrollmentError as error:
            problems.append(str(error))
        else:
            if any(k.startswith("kpa-emulator.dev/") for k in annotations):
                settings = enrollment.container_concurrency, float(enrollment.timeout_seconds)
                source = f"Service {_meta(service).get('name')}"
    cc, timeout = settings if settings is not None else (0, DEFAULT_TIMEOUT_SECONDS)
    config = RevisionConfig(key.name, key.namespace, container_concurrency=cc, timeout_seconds=timeout)
    endpoints = tuple(sorted({queue_address(pod) for pod in live if is_ready(pod)}))
    return RevisionState(config, endpoints, source, tuple(problems))


def ready_addresses(slices: Iterable[Object], own_name: str | None = None) -> tuple[list[str], str | None]:
    """The ready addresses of a Service's slices, sorted as strings (as Knative sorts them), and the
    address of the endpoint whose ``targetRef`` is pod ``own_name``, if any."""
    addresses: set[str] = set()
    own_ip = None
    for piece in slices:
        for endpoint in piece.get("endpoints") or []:
            if (endpoint.get("conditions") or {}).get("ready") is False or not endpoint.get("addresses"):
                continue  # ready unset means ready (discovery/v1)
            address = str(endpoint["addresses"][0])
            addresses.add(address)
            if own_name and (endpoint.get("targetRef") or {}).get("name") == own_name:
                own_ip = address
    return sorted(addresses), own_ip


def activator_slot(
    slices: Iterable[Object], own_ip: str | None, own_name: str | None = None
) -> tuple[int, int]:
    """This activator's (index, count) among the ready activators; (-1, n) when it is not among them."""
    addresses, found = ready_addresses(slices, own_name)
    me = own_ip if own_ip in addresses else found
    if me is None:
        return -1, max(1, len(addresses))
    return addresses.index(me), len(addresses)
