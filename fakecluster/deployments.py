"""The fake cluster's Deployment controller: each Deployment's pods kept at ``spec.replicas``.

It stands in for kube-controller-manager's Deployment and ReplicaSet controllers together, without
ReplicaSets (they are not served): a Deployment owns its pods directly (``ownerReferences`` name the
Deployment), each named ``<deployment>-<template hash>-<5 letters>`` and labelled
``pod-template-hash`` as a ReplicaSet's pods are. Pods are created from the template through the
same path as an API create — mutating admission first, so the sidecar webhook sees them — and
surplus pods are deleted as an API delete does (gracefully: the kubelet runs their preStop hooks and
stops them). Which go first: unscheduled, then not ready, then the newest, as a ReplicaSet chooses.
A finished pod (Succeeded or Failed) no longer counts and is replaced, but left in place, as a
ReplicaSet leaves it. A template change rolls out as surge-then-remove: the new template's pods are
created, and the old ones deleted once the new ones are all ready. A deleted Deployment's pods are
deleted with it (the garbage collector's background cascade). The status is written from the pods.

``plan`` and ``deployment_status`` are pure; ``DeploymentController`` is the shell that runs on the
kubelet's event loop.
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from fakecluster.admission import MutatingAdmission
from fakecluster.cluster import Cluster
from fakecluster.errors import ApiError
from fakecluster.paths import Target
from fakecluster.pod_status import is_ready
from fakecluster.resources import DEPLOYMENTS, PODS

log = logging.getLogger("fakecluster.deployments")

HASH_LABEL = "pod-template-hash"
_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"  # the alphabet apimachinery's SafeEncodeString uses
RETRY_S = 1.0  # a failed pod create (an admission webhook refusing or unreachable) is tried again after

Object = dict[str, Any]


def template_hash(template: Mapping[str, Any]) -> str:
    """A stable 10-character name for a pod template, from its canonical JSON."""
    digest = hashlib.sha256(json.dumps(template, sort_keys=True, separators=(",", ":")).encode()).digest()
    return "".join(_ALPHABET[byte % len(_ALPHABET)] for byte in digest[:10])


def owned_by(pod: Mapping[str, Any], uid: str) -> bool:
    refs = (pod.get("metadata") or {}).get("ownerReferences") or []
    return any(ref.get("uid") == uid and ref.get("controller") for ref in refs)


def pod_for(deployment: Mapping[str, Any], hash_: str) -> Object:
    """A new pod of ``deployment``'s template (its name generated), owned by the Deployment."""
    meta = deployment["metadata"]
    template = copy.deepcopy(deployment.get("spec", {}).get("template") or {})
    template_meta = template.get("metadata") or {}
    pod_meta: Object = {
        "generateName": f"{meta['name']}-{hash_}-",
        "namespace": meta.get("namespace"),
        "labels": {**(template_meta.get("labels") or {}), HASH_LABEL: hash_},
        "ownerReferences": [
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "name": meta["name"],
                "uid": meta["uid"],
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ],
    }
    if template_meta.get("annotations"):
        pod_meta["annotations"] = template_meta["annotations"]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": pod_meta, "spec": template.get("spec") or {}}


def wanted_replicas(deployment: Mapping[str, Any]) -> int:
    """``spec.replicas``; 1 when unset, as the API server defaults it."""
    replicas = (deployment.get("spec") or {}).get("replicas")
    return 1 if replicas is None else int(replicas)


def _active(pod: Mapping[str, Any]) -> bool:
    return not (pod.get("metadata") or {}).get("deletionTimestamp") and (pod.get("status") or {}).get(
        "phase"
    ) not in ("Succeeded", "Failed")


def _removal_order(pod: Mapping[str, Any]) -> tuple[bool, bool, str]:
    """Sort key: unscheduled first, then not ready, then the newest (a ReplicaSet's choice)."""
    scheduled = bool((pod.get("spec") or {}).get("nodeName"))
    created = str((pod.get("metadata") or {}).get("creationTimestamp", ""))
    inverted = "".join(chr(0x10FFFF - ord(ch)) for ch in created)  # newest first
    return scheduled, is_ready(pod), inverted


@dataclass(frozen=True, slots=True)
class Plan:
    """What the controller does next for one Deployment."""

    create: int
    delete: tuple[str, ...]


def plan(deployment: Mapping[str, Any], pods: Sequence[Mapping[str, Any]]) -> Plan:
    """Pods to create and to delete so that ``spec.replicas`` pods of the current template run."""
    replicas = wanted_replicas(deployment)
    current_hash = template_hash(deployment.get("spec", {}).get("template") or {})
    active = [pod for pod in pods if _active(pod)]
    current = [p for p in active if (p["metadata"].get("labels") or {}).get(HASH_LABEL) == current_hash]
    old = [p for p in active if p not in current]
    delete = [
        p["metadata"]["name"] for p in sorted(current, key=_removal_order)[: max(0, len(current) - replicas)]
    ]
    if sum(1 for p in current if is_ready(p)) >= replicas:
        delete += [p["metadata"]["name"] for p in old]
    return Plan(max(0, replicas - len(current)), tuple(delete))


def _count_fields(replicas: int, updated: int, ready: int) -> dict[str, int]:
    counts = {
        "replicas": replicas,
        "updatedReplicas": updated,
        "readyReplicas": ready,
        "availableReplicas": ready,
    }
    return {key: value for key, value in counts.items() if value}  # Go omits zero counts


def deployment_status(
    deployment: Mapping[str, Any], pods: Sequence[Mapping[str, Any]], now: str
) -> dict[str, Any]:
    """The Deployment's status from its pods; a condition's times move only when its status does."""
    wanted = wanted_replicas(deployment)
    current_hash = template_hash(deployment.get("spec", {}).get("template") or {})
    active = [pod for pod in pods if _active(pod)]
    updated = [p for p in active if (p["metadata"].get("labels") or {}).get(HASH_LABEL) == current_hash]
    ready = sum(1 for pod in active if is_ready(pod))
    status: dict[str, Any] = {"observedGeneration": deployment["metadata"].get("generation", 1)}
    status.update(_count_fields(len(active), len(updated), ready))
    if wanted > ready:
        status["unavailableReplicas"] = wanted - ready
    previous = {c.get("type"): c for c in (deployment.get("status") or {}).get("conditions") or []}
    done = len(updated) == wanted == ready == len(active)
    wanted_conditions = (
        ("Available", ready >= wanted, "MinimumReplicasAvailable", "MinimumReplicasUnavailable"),
        ("Progressing", True, "NewReplicaSetAvailable" if done else "ReplicaSetUpdated", ""),
    )
    status["conditions"] = []
    for kind, ok, reason_ok, reason_not in wanted_conditions:
        value, reason = ("True", reason_ok) if ok else ("False", reason_not)
        before = previous.get(kind) or {}
        same = before.get("status") == value and before.get("reason") == reason
        status["conditions"].append(
            {
                "type": kind,
                "status": value,
                "reason": reason,
                "message": f"Deployment has {ready} of {wanted} replicas ready.",
                "lastUpdateTime": before.get("lastUpdateTime", now) if same else now,
                "lastTransitionTime": before.get("lastTransitionTime", now)
                if before.get("status") == value
                else now,
            }
        )
    return status


class DeploymentController:
    """Reconciles Deployments on the kubelet's event loop; ``changed`` is told every relevant key."""

    def __init__(self, cluster: Cluster) -> None:
        self._cluster = cluster
        self._admission = MutatingAdmission(cluster)
        self._dirty: set[tuple[str, str]] = set()
        self._wake = asyncio.Event()
        self._orphaned: list[tuple[str, str]] = []  # (namespace, uid) of deleted Deployments

    def changed(self, namespace: str, name: str) -> None:
        self._dirty.add((namespace, name))
        self._wake.set()

    def deleted(self, namespace: str, uid: str) -> None:
        self._orphaned.append((namespace, uid))
        self._wake.set()

    async def run(self) -> None:
        """Reconcile whatever changed, one Deployment at a time, until cancelled."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._orphaned:
                self._delete_pods(*self._orphaned.pop())
            while self._dirty:
                namespace, name = self._dirty.pop()
                try:
                    await self._reconcile(namespace, name)
                except ApiError as error:
                    log.warning("deployment %s/%s: %s; retrying in %g s", namespace, name, error, RETRY_S)
                    asyncio.get_running_loop().call_later(RETRY_S, self.changed, namespace, name)
                except Exception:  # a bug: said, and the controller goes on with the others
                    log.exception("deployment %s/%s: reconcile failed", namespace, name)

    def _pods(self, namespace: str, uid: str) -> list[Object]:
        items = self._cluster.list_collection(PODS, namespace)["items"]
        return [pod for pod in items if owned_by(pod, uid)]

    def _delete_pods(self, namespace: str, uid: str) -> None:
        for pod in self._pods(namespace, uid):
            self._delete(namespace, pod["metadata"]["name"])

    def _delete(self, namespace: str, name: str) -> None:
        try:
            self._cluster.delete(PODS, namespace, name)
        except ApiError as error:
            if error.code != 404:
                raise

    async def _reconcile(self, namespace: str, name: str) -> None:
        deployment = self._cluster.read(DEPLOYMENTS, namespace, name)
        if deployment is None or deployment["metadata"].get("deletionTimestamp"):
            return
        uid = deployment["metadata"]["uid"]
        todo = plan(deployment, self._pods(namespace, uid))
        hash_ = template_hash(deployment.get("spec", {}).get("template") or {})
        target = Target(PODS, namespace, None, None)
        for _ in range(todo.create):
            admitted = await self._admission("CREATE", target, pod_for(deployment, hash_))
            if self._cluster.read(DEPLOYMENTS, namespace, name) is None:
                return  # deleted while the webhook answered
            self._cluster.create(PODS, namespace, admitted)
        for pod_name in todo.delete:
            self._delete(namespace, pod_name)
        current = self._cluster.read(DEPLOYMENTS, namespace, name)
        if current is None or current["metadata"]["uid"] != uid:
            return
        status = deployment_status(current, self._pods(namespace, uid), self._cluster.timestamp())
        if status != current.get("status"):
            self._cluster.write_status(DEPLOYMENTS, namespace, name, status)
