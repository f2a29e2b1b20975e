"""The local backend's capacity cap: how many pods one machine may run, and who gets them.

A Kubernetes cluster refuses pods it has no room for and leaves them Pending; a laptop has no
scheduler, so without a cap a revision asking for ``min-scale: "100000"`` forks until the machine
runs out of memory. The cap counts every pod process pair that exists (starting, ready or
draining) across all revisions. Its default comes from the machine: four pods per usable core, and
no more than the available memory holds at ``POD_MEMORY_ESTIMATE`` each. When the revisions want
more than the cap, it is shared out max-min fairly (``allot``): a small revision gets all it asks
for and the big ones split the rest, so one runaway revision cannot starve the others.

``default_max_pods`` and ``allot`` are pure; ``machine_resources`` reads the machine.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Hashable, Mapping
from pathlib import Path
from typing import TypeVar

PODS_PER_CORE = 4
# A trivial pod (queue-proxy + a small Python server) holds ~50 MB; a PyTorch predictor several
# hundred. A middle figure, so the memory bound matters only on small machines.
POD_MEMORY_ESTIMATE = 256 * 1024 * 1024

K = TypeVar("K", bound=Hashable)


def default_max_pods(cores: int, available_bytes: int | None) -> int:
    """``min(PODS_PER_CORE * cores, available_bytes // POD_MEMORY_ESTIMATE)``, at least 1."""
    cap = PODS_PER_CORE * max(1, cores)
    if available_bytes is not None:
        cap = min(cap, available_bytes // POD_MEMORY_ESTIMATE)
    return max(1, cap)


def allot(desired: Mapping[K, int], cap: int) -> dict[K, int]:
    """Each revision's share of ``cap`` pods: max-min fair (water-filling), never more than it wants.

    Revisions are served smallest demand first; each gets at most an equal split of what is left, so
    the leftover of small demands goes to the big ones. Ties are broken by key order, so the result
    is deterministic.
    """
    shares = {key: 0 for key in desired}
    left = max(0, cap)
    order = sorted(desired, key=lambda k: (max(0, desired[k]), str(k)))
    for index, key in enumerate(order):
        share = min(max(0, desired[key]), left // (len(order) - index))
        shares[key] = share
        left -= share
    return shares


def machine_resources() -> tuple[int, int | None]:
    """(usable cores, available memory in bytes or None when unknown), cgroup limits included."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    return cores, _available_memory()


def _available_memory() -> int | None:
    available: int | None = None
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                available = int(line.split()[1]) * 1024
    # A container's memory limit (cgroup v2) may be far below what the host has free.
    with contextlib.suppress(OSError, ValueError):
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit != "max":
            used = int(Path("/sys/fs/cgroup/memory.current").read_text())
            room = max(0, int(limit) - used)
            available = room if available is None else min(available, room)
    return available
