"""Nodes with finite CPU and memory, shared by the pods of many revisions: where a pod may run.

The scheduling model, kept small on purpose (a pure core: no clock, no simpy):

* a pod asks for ``cpu`` (millicores) and ``memory`` (MiB), its Kubernetes *requests*; what it uses
  is not modelled;
* a new pod goes to the **first node** (in the order the scenario lists them) whose free CPU and
  memory both cover its requests, at once, as kube-scheduler places a pod that fits;
* a pod that fits nowhere is **pending** (unschedulable); pending pods wait in **FIFO** order, and
  every time capacity frees (a pod leaves) they are tried oldest first, each placed if it fits now
  — a younger, smaller pod may go ahead of an older one that still does not fit, as kube-scheduler's
  unschedulable queue retries each pod on its own;
* a pod scaled away while pending just leaves the queue; no preemption, no priorities, no
  autoscaling of nodes, no daemon-set overhead (give nodes their allocatable, not their capacity).

Integers throughout (millicores, MiB), so freeing what was taken always restores the exact figure.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)


@dataclass(frozen=True)
class Resources:
    """A pod's requests or a node's allocatable: CPU in millicores, memory in MiB."""

    cpu: int
    memory: int

    def fits_in(self, free: Resources) -> bool:
        return self.cpu <= free.cpu and self.memory <= free.memory


class Cluster(Generic[K]):
    """Placement of pods (any hashable key) on nodes; see the module docstring for the model."""

    def __init__(self, nodes: Sequence[Resources]) -> None:
        if not nodes:
            raise ValueError("a cluster needs at least one node")
        self._sizes = list(nodes)
        self._free_cpu = [node.cpu for node in nodes]
        self._free_memory = [node.memory for node in nodes]
        self._placed: dict[K, tuple[int, Resources]] = {}  # pod -> (node, requests)
        self._pending: dict[K, Resources] = {}  # insertion order = FIFO

    @property
    def pending(self) -> int:
        """Pods waiting for room now."""
        return len(self._pending)

    @property
    def placed(self) -> int:
        return len(self._placed)

    def node_of(self, key: K) -> int | None:
        placed = self._placed.get(key)
        return None if placed is None else placed[0]

    def fits_anywhere(self, requests: Resources) -> bool:
        """Whether an empty node could hold the pod (else it would pend forever)."""
        return any(requests.fits_in(size) for size in self._sizes)

    def submit(self, key: K, requests: Resources) -> bool:
        """A new pod: True if placed now (first fit), False if it waits (pending, FIFO)."""
        if key in self._placed or key in self._pending:
            raise ValueError(f"pod {key!r} submitted twice")
        if self._place(key, requests):
            return True
        self._pending[key] = requests
        return False

    def remove(self, key: K) -> list[K]:
        """The pod left (gone, or scaled away while pending); returns pending pods placed in its room."""
        if self._pending.pop(key, None) is not None:
            return []
        placed = self._placed.pop(key, None)
        if placed is None:
            return []
        node, requests = placed
        self._free_cpu[node] += requests.cpu
        self._free_memory[node] += requests.memory
        started = [pod for pod, wanted in list(self._pending.items()) if self._place(pod, wanted)]
        for pod in started:
            del self._pending[pod]
        return started

    def _place(self, key: K, requests: Resources) -> bool:
        free_cpu, free_memory = self._free_cpu, self._free_memory
        for node in range(len(free_cpu)):
            if requests.cpu <= free_cpu[node] and requests.memory <= free_memory[node]:
                free_cpu[node] -= requests.cpu
                free_memory[node] -= requests.memory
                self._placed[key] = (node, requests)
                return True
        return False
