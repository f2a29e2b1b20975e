"""What runs inside the fake cluster after each write, standing in for Kubernetes' controllers.

A controller is any callable ``(change, cluster) -> None``; the cluster calls each one with every
committed change, after the write and its watch events, and the controller writes back through the
cluster like a real controller writes through the API (so its writes are watch events too).

Today there is one: ``settle_deployments`` makes a Deployment's status agree with its spec at once
(``replicas``, ``readyReplicas``… = ``spec.replicas``, ``observedGeneration`` = ``generation``)
without creating any Pod. The kubelet stand-in that runs pods as local processes replaces it with
a controller that creates Pods and reports readiness as they come up (docs/fake-cluster.md).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fakecluster.resources import DEPLOYMENTS
from fakecluster.store import Change

if TYPE_CHECKING:
    from fakecluster.cluster import Cluster


def settled_status(deployment: dict[str, Any], now: str) -> dict[str, Any]:
    """The status of ``deployment`` once all its replicas are up to date and ready (pure)."""
    replicas = deployment.get("spec", {}).get("replicas", 1)
    counts = {
        "replicas": replicas,
        "updatedReplicas": replicas,
        "readyReplicas": replicas,
        "availableReplicas": replicas,
    }
    status: dict[str, Any] = {"observedGeneration": deployment["metadata"].get("generation", 1)}
    status.update({field: count for field, count in counts.items() if count})  # Go omits zero counts
    status["conditions"] = [
        {
            "type": "Available",
            "status": "True",
            "reason": "MinimumReplicasAvailable",
            "message": "Deployment has minimum availability.",
            "lastUpdateTime": now,
            "lastTransitionTime": now,
        },
        {
            "type": "Progressing",
            "status": "True",
            "reason": "NewReplicaSetAvailable",
            "message": f'ReplicaSet "{deployment["metadata"]["name"]}" has successfully progressed.',
            "lastUpdateTime": now,
            "lastTransitionTime": now,
        },
    ]
    return status


def is_settled(deployment: dict[str, Any]) -> bool:
    status = deployment.get("status") or {}
    seen = status.get("observedGeneration") == deployment["metadata"].get("generation")
    ready = status.get("readyReplicas", 0) == deployment.get("spec", {}).get("replicas", 1)
    return bool(seen and ready)


def settle_deployments(change: Change, cluster: Cluster) -> None:
    """Write the settled status of every created or changed Deployment that is not yet settled."""
    if change.resource != DEPLOYMENTS or change.type == "DELETED":
        return
    meta = change.object["metadata"]
    current = cluster.read(DEPLOYMENTS, meta["namespace"], meta["name"])  # a later write may have come first
    if current is None or is_settled(current) or current["metadata"].get("deletionTimestamp"):
        return
    cluster.write_status(
        DEPLOYMENTS, meta["namespace"], meta["name"], settled_status(current, cluster.timestamp())
    )
