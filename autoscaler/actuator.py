"""The actuator: the one thing the autoscaler service asks of a backend.

The service decides how many pods a revision should have; an actuator makes it so and tells what
exists. Local processes (``localbackend.actuator``) and Kubernetes Deployments implement the same small
interface, so the service loop is the same on a laptop and on a cluster.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from autoscaler.stat import RevisionKey


@dataclass(frozen=True, slots=True)
class PodInfo:
    """What the control plane needs to know about one pod.

    ``address`` is where requests go (the queue-proxy's serving port), ``stats_url`` where the
    autoscaler scrapes. ``started_at`` (unix seconds) lets the scraper prefer old pods, as
    Knative's does, because young pods' averages still carry their warm-up.
    """

    name: str
    revision: RevisionKey
    address: str
    stats_url: str
    started_at: float
    ready: bool
    terminating: bool = False


PodsListener = Callable[[RevisionKey, Sequence[PodInfo]], None]


class Actuator(Protocol):
    def set_desired_scale(self, revision: RevisionKey, desired: int) -> None:
        """Ask for ``desired`` pods; returns at once, the actuator converges in the background."""

    def desired_scale(self, revision: RevisionKey) -> int:
        """The scale last asked for (what the backend is converging to)."""

    def pods(self, revision: RevisionKey) -> Sequence[PodInfo]:
        """Pods that exist now, ready or not, excluding those already being stopped."""

    def subscribe(self, listener: PodsListener) -> None:
        """Call ``listener(revision, pods)`` whenever a revision's pod set or readiness changes."""


def ready_pods(pods: Sequence[PodInfo]) -> list[PodInfo]:
    return [p for p in pods if p.ready and not p.terminating]
