"""A pod's ``status`` as the fake kubelet reports it, from what it knows of the pod: pure.

Kubelet's rules, simplified: the pod is ``Pending`` until its containers started, then
``Running``; a container with no readiness probe is ready once it runs, one with a probe once the
probe passed ``successThreshold`` times; the pod is Ready when every container is. Nothing restarts
here: a container that exits stays ``terminated`` (not ready), and once every container has exited
the pod is finished — ``Succeeded`` if all exited 0, else ``Failed`` — whatever its restartPolicy.
A condition's ``lastTransitionTime`` moves only when its status does.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

NODE_IP = "127.0.0.1"  # the one node: the host itself


@dataclass(frozen=True, slots=True)
class ContainerView:
    """One container as the kubelet sees it."""

    name: str
    image: str
    ready: bool = False
    started_at: str | None = None  # set once running
    exit_code: int | None = None  # set once exited
    finished_at: str | None = None
    reason: str = ""  # of a waiting or terminated state
    message: str = ""
    pid: int | None = None


@dataclass(frozen=True, slots=True)
class PodView:
    """The pod as the kubelet sees it; ``pod_ip`` None before the pod has its address."""

    pod_ip: str | None
    start_time: str | None
    containers: Sequence[ContainerView]
    unschedulable: str = ""  # why the node cannot take the pod (its pod cap); "" once it did


def _condition(
    kind: str, ok: bool, now: str, previous: Mapping[str, Any], reason: str = ""
) -> dict[str, Any]:
    status = "True" if ok else "False"
    before: Mapping[str, Any] = next(
        (c for c in previous.get("conditions") or [] if c.get("type") == kind), {}
    )
    condition: dict[str, Any] = {
        "type": kind,
        "status": status,
        "lastProbeTime": None,
        "lastTransitionTime": before.get("lastTransitionTime", now)
        if before.get("status") == status
        else now,
    }
    if reason and not ok:
        condition["reason"] = reason
    return condition


def _container_status(view: ContainerView) -> dict[str, Any]:
    if view.exit_code is not None:
        terminated: dict[str, Any] = {
            "exitCode": view.exit_code,
            "reason": view.reason or ("Completed" if view.exit_code == 0 else "Error"),
            "startedAt": view.started_at,
            "finishedAt": view.finished_at,
        }
        if view.message:
            terminated["message"] = view.message
        state: dict[str, Any] = {"terminated": terminated}
    elif view.started_at is not None:
        state = {"running": {"startedAt": view.started_at}}
    else:
        waiting = {"reason": view.reason or "ContainerCreating"}
        if view.message:
            waiting["message"] = view.message
        state = {"waiting": waiting}
    status = {
        "name": view.name,
        "image": view.image,
        "imageID": "",
        "ready": view.ready and view.exit_code is None,
        "started": view.started_at is not None and view.exit_code is None,
        "restartCount": 0,
        "state": state,
    }
    if view.pid is not None:
        status["containerID"] = f"fakecluster://{view.pid}"
    return status


def phase_of(view: PodView) -> str:
    containers = view.containers
    if containers and all(c.exit_code is not None for c in containers):
        return "Succeeded" if all(c.exit_code == 0 for c in containers) else "Failed"
    if containers and all(c.started_at is not None for c in containers):
        return "Running"
    return "Pending"


def pod_status(view: PodView, previous: Mapping[str, Any] | None, now: str) -> dict[str, Any]:
    """The ``status`` to write for ``view``; ``previous`` (the stored status) keeps transition times."""
    previous = previous or {}
    if view.unschedulable:
        scheduled = _condition("PodScheduled", False, now, previous, "Unschedulable")
        return {"phase": "Pending", "conditions": [{**scheduled, "message": view.unschedulable}]}
    ready = bool(view.containers) and all(c.ready and c.exit_code is None for c in view.containers)
    status: dict[str, Any] = {
        "phase": phase_of(view),
        "conditions": [
            _condition("PodReadyToStartContainers", view.pod_ip is not None, now, previous),
            _condition("Initialized", True, now, previous),
            _condition("Ready", ready, now, previous, "ContainersNotReady"),
            _condition("ContainersReady", ready, now, previous, "ContainersNotReady"),
            _condition("PodScheduled", True, now, previous),
        ],
        "hostIP": NODE_IP,
        "hostIPs": [{"ip": NODE_IP}],
        "containerStatuses": [_container_status(c) for c in view.containers],
        "qosClass": "BestEffort",
    }
    if view.pod_ip is not None:
        status.update(podIP=view.pod_ip, podIPs=[{"ip": view.pod_ip}])
    if view.start_time is not None:
        status["startTime"] = view.start_time
    return status


def is_ready(pod: Mapping[str, Any]) -> bool:
    """Whether ``pod``'s Ready condition is True."""
    conditions = (pod.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)
