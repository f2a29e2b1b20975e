"""The ``scale`` subresource of Deployments: a synthetic ``autoscaling/v1`` Scale view of the
Deployment, and a write of it back as an ordinary Deployment update (reference §1.1).

Pure. Writing a Scale changes only ``spec.replicas``; its ``metadata.resourceVersion``, when set,
is the Deployment's optimistic-lock precondition, so a stale scale write is a 409 like any other.
"""

from __future__ import annotations

import copy
from typing import Any

from fakecluster import errors, selectors
from fakecluster.resources import ResourceType

SCALE = ResourceType("autoscaling", "v1", "scale", "scale", "Scale")  # only for Status messages


def scale_of(deployment: dict[str, Any]) -> dict[str, Any]:
    """The Scale a GET of ``…/deployments/NAME/scale`` answers: ``status.replicas`` always present
    (py37 requires it) and ``status.selector`` a string in query syntax, never an object."""
    meta = deployment["metadata"]
    return {
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            field: meta[field]
            for field in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")
            if field in meta
        },
        "spec": {"replicas": deployment.get("spec", {}).get("replicas", 1)},
        "status": {
            "replicas": (deployment.get("status") or {}).get("replicas", 0),
            "selector": selectors.render(deployment.get("spec", {}).get("selector")),
        },
    }


def scaled(deployment: dict[str, Any], scale: Any) -> dict[str, Any]:
    """The Deployment with the Scale's ``spec.replicas``, carrying the Scale's resourceVersion (if
    any) as the precondition of the update that stores it."""
    name = deployment["metadata"]["name"]
    if not isinstance(scale, dict):
        raise errors.bad_request("the body must be a Scale object")
    replicas = (scale.get("spec") or {}).get("replicas", 0)
    if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0:
        raise errors.invalid(
            SCALE,
            name,
            [("spec.replicas", f"Invalid value: {replicas!r}: must be greater than or equal to 0")],
        )
    if (scale.get("metadata") or {}).get("name") not in (None, "", name):
        raise errors.bad_request(
            f"the name of the object ({scale['metadata']['name']}) does not match the name on "
            f"the URL ({name})"
        )
    updated = copy.deepcopy(deployment)
    updated.setdefault("spec", {})["replicas"] = replicas
    updated["metadata"]["resourceVersion"] = (scale.get("metadata") or {}).get("resourceVersion") or ""
    return updated
