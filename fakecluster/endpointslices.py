"""The fake cluster's EndpointSlice controller: a Service with a selector gets the slices of its pods,
as kube-controller-manager's endpointslice controller writes them (reference §1.4).

Each Service with a ``spec.selector`` gets slices labelled ``kubernetes.io/service-name`` and
``endpointslice.kubernetes.io/managed-by: endpointslice-controller.k8s.io``, owned by the Service,
listing every selected pod that has an IP and is not finished: ``ready`` = the pod's Ready condition
and not terminating, ``serving`` = Ready, ``terminating`` = being deleted (all three written, as
the real controller does). Ports are the Service's, with each ``targetPort`` resolved against the
pod's container ports (a named one may differ from pod to pod: pods are grouped into one slice per
distinct port list). A selected Service with no such pod keeps one empty slice. Slices are named
``<service>-<5 letters of their ports' hash>`` (the real controller uses ``generateName``).
Selector-less Services are left alone (their slices are their owner's business), and a Service's
slices go with it.

It runs as a plain controller (``sync_endpoint_slices(change, cluster)``): synchronously after each
write, like ``settle_deployments``, so a slice is current before the write that changed it is
answered.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

from fakecluster.cluster import Cluster
from fakecluster.errors import ApiError
from fakecluster.pod_status import is_ready
from fakecluster.resources import ENDPOINTSLICES, PODS, SERVICES
from fakecluster.store import Change

MANAGED_BY = "endpointslice-controller.k8s.io"
SERVICE_NAME_LABEL = "kubernetes.io/service-name"
MANAGED_BY_LABEL = "endpointslice.kubernetes.io/managed-by"
_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
Object = dict[str, Any]


def selects(selector: Mapping[str, str] | None, labels: Mapping[str, str] | None) -> bool:
    """Whether a Service's (non-empty) ``spec.selector`` selects an object with ``labels``."""
    return bool(selector) and all((labels or {}).get(key) == value for key, value in (selector or {}).items())


def _container_port(pod: Mapping[str, Any], name: str) -> int | None:
    for container in (pod.get("spec") or {}).get("containers") or []:
        for port in container.get("ports") or []:
            if port.get("name") == name and isinstance(port.get("containerPort"), int):
                return int(port["containerPort"])
    return None


def _ports(service: Mapping[str, Any], pod: Mapping[str, Any]) -> tuple[tuple[Any, ...], ...]:
    """The slice ports for ``pod``: (name, port, protocol, appProtocol) per Service port it resolves."""
    ports = []
    for entry in (service.get("spec") or {}).get("ports") or []:
        target = entry.get("targetPort", entry.get("port"))
        number = _container_port(pod, target) if isinstance(target, str) else target
        if isinstance(number, int):
            ports.append(
                (entry.get("name", ""), number, entry.get("protocol", "TCP"), entry.get("appProtocol"))
            )
    return tuple(sorted(ports, key=lambda port: (port[0], port[1])))


def _endpoint(pod: Mapping[str, Any], publish_not_ready: bool) -> Object:
    meta = pod.get("metadata") or {}
    terminating = bool(meta.get("deletionTimestamp"))
    serving = is_ready(pod) or publish_not_ready
    endpoint: Object = {
        "addresses": [pod["status"]["podIP"]],
        "conditions": {"ready": serving and not terminating, "serving": serving, "terminating": terminating},
        "targetRef": {
            "kind": "Pod",
            "namespace": meta.get("namespace"),
            "name": meta.get("name"),
            "uid": meta.get("uid"),
        },
    }
    node = (pod.get("spec") or {}).get("nodeName")
    if node:
        endpoint["nodeName"] = node
    return endpoint


def _first_address(endpoint: Object) -> str:
    return str(endpoint["addresses"][0])


def _port_doc(port: tuple[Any, ...]) -> Object:
    name, number, protocol, app_protocol = port
    doc: Object = {"name": name, "port": number, "protocol": protocol}
    if app_protocol:
        doc["appProtocol"] = app_protocol
    return doc


def wanted_slices(service: Mapping[str, Any], pods: Sequence[Mapping[str, Any]]) -> dict[str, Object]:
    """The slices ``service`` should have, by name ({} for a selector-less Service)."""
    meta, spec = service["metadata"], service.get("spec") or {}
    selector = spec.get("selector")
    if not selector:
        return {}
    publish = bool(spec.get("publishNotReadyAddresses"))
    groups: dict[tuple[tuple[Any, ...], ...], list[Object]] = {}
    for pod in pods:
        phase = (pod.get("status") or {}).get("phase")
        if not selects(selector, (pod.get("metadata") or {}).get("labels")):
            continue
        if not (pod.get("status") or {}).get("podIP") or phase in ("Succeeded", "Failed"):
            continue
        groups.setdefault(_ports(service, pod), []).append(_endpoint(pod, publish))
    if not groups:
        groups[()] = []  # the placeholder slice of a Service that selects no running pod
    slices: dict[str, Object] = {}
    for ports, endpoints in groups.items():
        digest = hashlib.sha256(json.dumps(ports).encode()).digest()
        name = f"{meta['name']}-{''.join(_ALPHABET[b % len(_ALPHABET)] for b in digest[:5])}"
        labels = {
            **(meta.get("labels") or {}),
            SERVICE_NAME_LABEL: meta["name"],
            MANAGED_BY_LABEL: MANAGED_BY,
        }
        slices[name] = {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "name": name,
                "namespace": meta.get("namespace"),
                "labels": labels,
                "ownerReferences": [
                    {
                        "apiVersion": "v1",
                        "kind": "Service",
                        "name": meta["name"],
                        "uid": meta.get("uid"),
                        "controller": True,
                        "blockOwnerDeletion": True,
                    }
                ],
            },
            "addressType": "IPv4",
            "endpoints": sorted(endpoints, key=_first_address),
            "ports": [_port_doc(port) for port in ports],
        }
    return slices


def _differs(stored: Mapping[str, Any], wanted: Mapping[str, Any]) -> bool:
    fields = ("endpoints", "ports", "addressType")
    meta_fields = ("labels", "ownerReferences")
    return any(stored.get(f) != wanted.get(f) for f in fields) or any(
        stored["metadata"].get(f) != wanted["metadata"].get(f) for f in meta_fields
    )


def reconcile(cluster: Cluster, namespace: str, name: str) -> None:
    """Make the managed slices of Service ``namespace/name`` what its pods say (none if it is gone)."""
    service = cluster.read(SERVICES, namespace, name)
    pods = cluster.list_collection(PODS, namespace)["items"] if service is not None else []
    wanted = wanted_slices(service, pods) if service is not None else {}
    managed = f"{SERVICE_NAME_LABEL}={name},{MANAGED_BY_LABEL}={MANAGED_BY}"
    stored = {
        s["metadata"]["name"]: s for s in cluster.list_collection(ENDPOINTSLICES, namespace, managed)["items"]
    }
    for slice_name, body in wanted.items():
        if slice_name not in stored:
            cluster.create(ENDPOINTSLICES, namespace, body)
        elif _differs(stored[slice_name], body):
            body["metadata"]["resourceVersion"] = stored[slice_name]["metadata"]["resourceVersion"]
            cluster.replace(ENDPOINTSLICES, namespace, slice_name, body)
    for slice_name in set(stored) - set(wanted):
        try:
            cluster.delete(ENDPOINTSLICES, namespace, slice_name)
        except ApiError as error:
            if error.code != 404:
                raise


def _endpoint_view(pod: Mapping[str, Any] | None) -> tuple[Any, ...] | None:
    """What of a pod its endpoints show: a change elsewhere (a container's state) changes no slice."""
    if pod is None:
        return None
    meta, status = pod.get("metadata") or {}, pod.get("status") or {}
    ports = [c.get("ports") for c in (pod.get("spec") or {}).get("containers") or []]
    node = (pod.get("spec") or {}).get("nodeName")
    return (
        meta.get("labels"),
        meta.get("deletionTimestamp"),
        status.get("podIP"),
        status.get("phase"),
        is_ready(pod),
        ports,
        node,
    )


def sync_endpoint_slices(change: Change, cluster: Cluster) -> None:
    """The controller: after a Service or Pod change, reconcile the Services it concerns."""
    meta = change.object["metadata"]
    namespace = meta.get("namespace") or ""
    if change.resource == SERVICES:
        selected = [
            ((obj or {}).get("spec") or {}).get("selector") for obj in (change.object, change.previous)
        ]
        if any(selected):  # a selector-less Service's slices are its owner's, before and after
            reconcile(cluster, namespace, meta["name"])
    elif change.resource == PODS:
        if change.type == "MODIFIED" and _endpoint_view(change.object) == _endpoint_view(change.previous):
            return
        labels = [meta.get("labels"), ((change.previous or {}).get("metadata") or {}).get("labels")]

        def concerned(service: Object) -> bool:
            selector = (service.get("spec") or {}).get("selector")
            return any(selects(selector, these) for these in labels)

        # Only the Services selecting the pod are copied: a namespace of 1,000 selector-less revision
        # Services cost a 17 ms copy of all of them on every pod write, under the cluster's lock.
        for service in cluster.matching(SERVICES, namespace, concerned):
            reconcile(cluster, namespace, service["metadata"]["name"])
