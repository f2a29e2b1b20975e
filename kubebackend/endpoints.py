"""What a revision's public EndpointSlice holds: Knative's ServerlessService flip, without Knative.

Per revision the controller owns a selector-less Service and one EndpointSlice for it. In **proxy**
mode the slice lists a subset of the activator pods (chosen per revision by rendezvous hashing, so
a revision keeps its activators while others come and go); in **serve** mode it lists the
revision's ready pods at their queue-proxy port. Knative's two overrides apply: serve with no ready
pod is proxy, and proxy with no ready activator is serve (better to try the pods than to black-hole).

Pure: every function takes the observed state and returns plain data; the controller's shell
compares the result with what is stored and writes only a difference.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from activator.routing import SERVICE_SUFFIX
from autoscaler.lifecycle import PROXY, SERVE

# Never the built-in controllers' values (kubernetes-wire.md 1.4), and a valid label *value*: no "/"
# (a value is at most 63 of [A-Za-z0-9._-]; the API server refuses the slice, and a selector on it, else).
MANAGED_BY = "controller.kpa-emulator.dev"
SERVICE_NAME_LABEL = "kubernetes.io/service-name"
MANAGED_BY_LABEL = "endpointslice.kubernetes.io/managed-by"
REVISION_LABEL = "kpa-emulator.dev/revision"
MODE_ANNOTATION = "kpa-emulator.dev/mode"
QUEUE_PORT = 8012  # the queue-proxy's serving port, Knative's number
ACTIVATOR_PORT = 8012  # the activator's serving port, Knative's number
MIN_ACTIVATORS = 2


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One ready address the slice may list, with the pod it belongs to (for ``targetRef``)."""

    ip: str
    pod: str


def activators_needed(
    ready_pods: int, total_value: float, target_burst_capacity: float, activator_capacity: float
) -> int:
    """How many activators a revision's proxy-mode slice lists (Knative's ``numActivators``).

    Enough for the revision's capacity plus its burst allowance at ``activator-capacity`` requests
    each, never fewer than two, so that one activator going away never leaves a revision without one.
    """
    if target_burst_capacity == 0:
        return MIN_ACTIVATORS
    burst = max(target_burst_capacity, 0.0)
    return max(MIN_ACTIVATORS, math.ceil((ready_pods * total_value + burst) / activator_capacity))


def _weight(key: str, member: str) -> bytes:
    return hashlib.sha256(f"{key}\x00{member}".encode()).digest()


def activator_subset(revision: str, activators: Iterable[Endpoint], count: int) -> list[Endpoint]:
    """``count`` activators for ``revision``: all when there are not more, else a stable subset.

    Rendezvous hashing: each activator scores ``sha256(revision, ip)`` and the highest ``count``
    win, so adding or removing one activator moves only the revisions that scored it in their top.
    """
    members = sorted(set(activators), key=lambda e: e.ip)
    if len(members) <= count:
        return members
    chosen = sorted(members, key=lambda e: _weight(revision, e.ip), reverse=True)[:count]
    return sorted(chosen, key=lambda e: e.ip)


def effective_mode(wanted: str, ready_pods: int, ready_activators: int) -> str:
    """The mode the slice is written in: Knative's SKS overrides of the autoscaler's wish."""
    if wanted == SERVE and ready_pods == 0:
        return PROXY
    if wanted == PROXY and ready_activators == 0 and ready_pods > 0:
        return SERVE
    return wanted


def service_name(revision: str) -> str:
    """The revision's public Service: ``<revision>-kpa``, the address clients call.

    Not the revision's own name, which Knative would use: on a plain cluster that name is usually
    taken already — KServe owns a Service ``<isvc>-predictor`` (and reverts edits to it), and a
    Deployment ``web`` mostly comes with the user's own Service ``web`` selecting its pods.
    """
    return revision + SERVICE_SUFFIX


def slice_name(revision: str) -> str:
    """The one EndpointSlice the controller writes for ``revision`` (named like its Service)."""
    return service_name(revision)


def endpoint_slice(
    namespace: str,
    revision: str,
    mode: str,
    endpoints: Sequence[Endpoint],
    *,
    owner: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The EndpointSlice body for ``revision`` in ``mode`` listing ``endpoints`` (already chosen).

    Labelled ``kubernetes.io/service-name`` (so kube-proxy routes the Service through it) and with a
    managed-by value of ours (so no built-in controller touches it); ``owner`` (the Service's
    ``{name, uid}``) makes it go when the Service goes.
    """
    port = QUEUE_PORT if mode == SERVE else ACTIVATOR_PORT
    metadata: dict[str, Any] = {
        "name": slice_name(revision),
        "namespace": namespace,
        "labels": {
            SERVICE_NAME_LABEL: service_name(revision),
            MANAGED_BY_LABEL: MANAGED_BY,
            REVISION_LABEL: revision,
        },
        "annotations": {MODE_ANNOTATION: mode},
    }
    if owner is not None:
        metadata["ownerReferences"] = [
            {
                "apiVersion": "v1",
                "kind": "Service",
                "name": owner["name"],
                "uid": owner["uid"],
                "controller": True,
            }
        ]
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": metadata,
        "addressType": "IPv4",
        "endpoints": [
            {
                "addresses": [e.ip],
                "conditions": {"ready": True, "serving": True, "terminating": False},
                "targetRef": {"kind": "Pod", "namespace": namespace, "name": e.pod},
            }
            for e in sorted(endpoints, key=lambda e: e.ip)
        ],
        "ports": [{"name": "http", "protocol": "TCP", "port": port}],
    }


def revision_service(
    namespace: str, revision: str, labels: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """The selector-less public Service of ``revision``: port 80 to whatever the slice lists."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": service_name(revision),
            "namespace": namespace,
            "labels": {**(labels or {}), REVISION_LABEL: revision},
        },
        "spec": {"ports": [{"name": "http", "protocol": "TCP", "port": 80, "targetPort": QUEUE_PORT}]},
    }


def slice_differs(stored: Mapping[str, Any] | None, wanted: Mapping[str, Any]) -> bool:
    """Whether the stored slice must be rewritten: its endpoints, ports or mode differ from ``wanted``."""
    if stored is None:
        return True

    def addresses(body: Mapping[str, Any]) -> list[tuple[str, ...]]:
        return sorted(tuple(e.get("addresses") or ()) for e in body.get("endpoints") or ())

    def ports(body: Mapping[str, Any]) -> list[tuple[Any, ...]]:
        return sorted((p.get("name"), p.get("port")) for p in body.get("ports") or ())

    def mode(body: Mapping[str, Any]) -> Any:
        return ((body.get("metadata") or {}).get("annotations") or {}).get(MODE_ANNOTATION)

    return (
        addresses(stored) != addresses(wanted)
        or ports(stored) != ports(wanted)
        or mode(stored) != mode(wanted)
    )
