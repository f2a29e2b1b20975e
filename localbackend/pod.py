"""One local pod: how to start it (``PodTemplate``), what it is now (``Pod``: a queue-proxy child and
a user-container child, their ports and readiness) and why it last failed (``PodFailure``).

Plain state shared by the actuator, which decides when pods start and stop, and
``localbackend.pod_process``, which starts and stops their processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from autoscaler.actuator import PodInfo
from autoscaler.stat import RevisionKey

TAIL_BYTES = 2000  # how much of a failed pod's output its failure report quotes
# kpa up tells every user container its entry URL, so a container that calls other revisions (the
# InferenceGraph router, `kpa graph`) reaches them through the activator and can wake them from zero.
ENTRY_URL_ENV = "KPA_ENTRY_URL"


@dataclass(frozen=True, slots=True)
class PodTemplate:
    """How to start one pod of a revision (built by the local stack from the stack file)."""

    revision: RevisionKey
    command: tuple[str, ...]
    port_env: str = "PORT"
    env: Mapping[str, str] = field(default_factory=dict)
    workdir: Path = Path(".")
    container_concurrency: int = 0
    timeout_seconds: float = 300.0
    response_start_timeout_seconds: float | None = None
    idle_timeout_seconds: float = 0.0
    startup_timeout: float = 60.0
    readiness_probe: str | None = (
        None  # Knative's JSON probe (SERVING_READINESS_PROBE); None: TCP on the port
    )
    # Queue-proxy quiet period after SIGTERM. Knative waits 30 s for load balancers to notice; here the
    # pod leaves the routing tables before the SIGTERM, so a short one only covers requests in transit.
    drain_seconds: float = 0.5
    # More queue-proxy environment, e.g. the revision's data-path authentication (KPA_AUTH_*).
    queue_proxy_env: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class PodFailure:
    """Why the latest pod of a revision failed; `kpa status` shows the last one. Failure listeners
    hear it at once, and hear None when a pod of the revision becomes ready again."""

    pod: str
    reason: str
    output_tail: str
    at: float


FailureListener = Callable[[RevisionKey, PodFailure | None], None]


class Pod:
    """A pod's two processes and what is known of them; created at launch, dropped once stopped."""

    def __init__(self, name: str, seq: int, template: PodTemplate, log_dir: Path) -> None:
        self.name = name
        self.seq = seq  # creation order: scale-down stops the highest (youngest) first
        self.template = template
        self.log_path = log_dir / f"{name}.log"
        self.qp_log_path = log_dir / f"{name}.queue-proxy.log"
        self.user: asyncio.subprocess.Process | None = None
        self.queue_proxy: asyncio.subprocess.Process | None = None
        self.user_port = 0
        self.serving_port = 0
        self.stats_port = 0
        self.metrics_port = 0  # the queue-proxy's Prometheus endpoint
        self.started_at = time.time()
        self.ready_at: float | None = None
        self.terminating = False
        self.stop_requested = asyncio.Event()
        self.launched = asyncio.Event()  # both processes started (or failed to)
        self.starting = True  # holds a place in the spawn limiter until ready, failed or cancelled
        self.task: asyncio.Task[None] | None = None

    @property
    def ready(self) -> bool:
        return self.ready_at is not None and not self.terminating

    def info(self) -> PodInfo:
        return PodInfo(
            name=self.name,
            revision=self.template.revision,
            address=f"127.0.0.1:{self.serving_port}",
            stats_url=f"http://127.0.0.1:{self.stats_port}/stats",
            started_at=self.started_at,
            ready=self.ready,
            terminating=self.terminating,
        )

    def processes(self) -> list[asyncio.subprocess.Process]:
        return [p for p in (self.queue_proxy, self.user) if p is not None]

    def exit_reason(self) -> str | None:
        """Which of its processes has ended and how, e.g. "queue-proxy killed by SIGKILL"; None: none."""
        for label, proc in (("user container", self.user), ("queue-proxy", self.queue_proxy)):
            if proc is not None and proc.returncode is not None:
                code = proc.returncode
                how = f"killed by {signal.Signals(-code).name}" if code < 0 else f"exited with code {code}"
                return f"{label} {how}"
        return None

    def output_tail(self) -> str:
        parts = []
        for path in (self.log_path, self.qp_log_path):
            with contextlib.suppress(OSError), path.open("rb") as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - TAIL_BYTES))
                text = f.read().decode(errors="replace").strip()
                if text:
                    parts.append(f"[{path.name}] {text}")
        return "\n".join(parts)


def scale_down_order(pods: Sequence[Pod]) -> list[Pod]:
    """Which pods to stop first, as a ReplicaSet (and the simulator) does: pods not ready yet, then
    the youngest; within each kind the most recently created first."""
    return sorted(pods, key=lambda p: (p.ready, -p.seq))
