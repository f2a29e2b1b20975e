"""Pods as local processes: a queue-proxy child plus the user-container child, on loopback ports.

This is the Kubernetes Deployment controller and kubelet of the local stack, cut down to what the
autoscaler needs: converge each revision to its desired pod count, tell who is ready, notice pods
that die and replace them, and stop pods the way Knative does — drain the queue-proxy first (it
finishes in-flight requests), then end the user container.

A user container that cannot start (exits, or never passes the readiness probe within its startup
timeout) is reported with the tail of its output and retried with exponential backoff, like
Kubernetes' CrashLoopBackOff, instead of in a hot loop.

Bounded like a node, not a cluster: at most ``max_pods`` pods exist at once across all revisions
(``localbackend.capacity``; desired pods beyond the revision's fair share of the cap are
*pending*), and launches are paced by ``localbackend.spawn_limit``. When several revisions want more
than the cap, a revision above its share gives up its youngest pods to the others.

Nothing outlives the stack: every child runs in its own process group, ``close``/``kill_all`` take
the groups down, ``stop_spawning`` cancels launches under way instead of waiting for them, and
``localbackend.orphans`` kills the pods even when the stack's process is SIGKILLed.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from autoscaler.actuator import PodInfo, PodsListener
from autoscaler.stat import RevisionKey
from localbackend.capacity import allot, default_max_pods, machine_resources
from localbackend.orphans import OrphanGuard, die_with_parent
from localbackend.spawn_limit import SpawnLimiter

log = logging.getLogger("kpa.actuator")

QUEUE_PROXY_COMMAND = (sys.executable, "-m", "kpa", "queue-proxy")
PROBE_INTERVAL = 0.05  # seconds between readiness probes of a starting pod (Knative's aggressive probing)
PROBE_TIMEOUT = 0.5
BACKOFF_FIRST = 1.0  # seconds before retrying after a second consecutive failure
BACKOFF_MAX = 30.0
HEALTHY_RESET = 10.0  # a pod ready this long clears the failure count
STOP_GRACE = 5.0  # after the queue-proxy drained, how long the user container gets to exit on SIGTERM
PORTS_TIMEOUT = 10.0  # how long the queue-proxy may take to say which ports it bound
TAIL_BYTES = 2000
# Spawn pacing: launches under way at once (each is an interpreter start on the same cores) and the
# steady launch rate; a fresh stack may start a burst of SPAWN_BURST pods at once.
SPAWN_IN_FLIGHT_PER_CORE = 2
SPAWN_IN_FLIGHT_MIN = 4
SPAWN_PER_SECOND = 10.0
SPAWN_BURST = 10


@dataclass(frozen=True, slots=True)
class PodTemplate:
    """How to start one pod of a revision (built by `kpa up` from the stack file)."""

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


class _Pod:
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


class _RevisionPods:
    def __init__(self, template: PodTemplate) -> None:
        self.template = template
        self.desired = 0
        self.share = 0  # pods it may have under the capacity cap (<= desired)
        self.capped = False  # share < desired (logged once each time it becomes so)
        self.pods: dict[str, _Pod] = {}
        self.failures = 0
        self.retry_at = 0.0
        self.last_failure: PodFailure | None = None
        self.failing = False  # a failure was recorded and no pod has become ready since

    def live(self) -> list[_Pod]:
        return [p for p in self.pods.values() if not p.terminating]


def scale_down_order(pods: Sequence[_Pod]) -> list[_Pod]:
    """Which pods to stop first, as a ReplicaSet (and the simulator) does: pods not ready yet, then
    the youngest; within each kind the most recently created first."""
    return sorted(pods, key=lambda p: (p.ready, -p.seq))


class LocalActuator:
    """Runs each revision's pods as local processes; implements ``autoscaler.actuator.Actuator``."""

    def __init__(
        self,
        templates: Sequence[PodTemplate],
        log_dir: str | Path,
        queue_proxy_command: Sequence[str] = QUEUE_PROXY_COMMAND,
        clock: Callable[[], float] = time.time,
        max_pods: int | None = None,
        spawn_limiter: SpawnLimiter | None = None,
    ) -> None:
        """``max_pods``: the capacity cap (None: ``default_max_pods`` of this machine);
        ``spawn_limiter``: launch pacing (None: from the machine's cores and the SPAWN_* constants)."""
        self.log_dir = Path(log_dir)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.queue_proxy_command = tuple(queue_proxy_command)
        self.clock = clock
        cores, memory = machine_resources()
        if max_pods is not None and max_pods < 1:
            raise ValueError(f"max_pods={max_pods}: must be at least 1")
        self.max_pods = max_pods if max_pods is not None else default_max_pods(cores, memory)
        self.spawn_limiter = spawn_limiter or SpawnLimiter(
            max(SPAWN_IN_FLIGHT_MIN, SPAWN_IN_FLIGHT_PER_CORE * cores), SPAWN_PER_SECOND, SPAWN_BURST
        )
        self._revisions = {t.revision: _RevisionPods(t) for t in templates}
        self._listeners: list[PodsListener] = []
        self._failure_listeners: list[FailureListener] = []
        self._names = itertools.count(1)
        self._tasks: set[asyncio.Task[None]] = set()
        self._wake = asyncio.Event()
        self._reconciler: asyncio.Task[None] | None = None
        self._closing = False
        self._http: httpx.AsyncClient | None = None
        self._preexec = die_with_parent()
        self._guard = OrphanGuard()

    # ---- the Actuator interface -----------------------------------------------------------------

    def set_desired_scale(self, revision: RevisionKey, desired: int) -> None:
        state = self._revisions[revision]
        if desired != state.desired:
            log.info("%s: desired scale %d -> %d", revision, state.desired, desired)
        state.desired = max(0, desired)
        self._wake.set()

    def desired_scale(self, revision: RevisionKey) -> int:
        return self._revisions[revision].desired

    def pods(self, revision: RevisionKey) -> list[PodInfo]:
        return [p.info() for p in self._revisions[revision].live() if p.serving_port]

    def subscribe(self, listener: PodsListener) -> None:
        self._listeners.append(listener)

    def subscribe_failures(self, listener: FailureListener) -> None:
        """``listener(revision, failure)`` on every pod failure, ``listener(revision, None)`` when a
        pod of a failing revision becomes ready (so held requests can be told why they wait)."""
        self._failure_listeners.append(listener)

    # ---- extras for status views ------------------------------------------------------------------

    def last_failure(self, revision: RevisionKey) -> PodFailure | None:
        return self._revisions[revision].last_failure

    def pending(self, revision: RevisionKey) -> int:
        """Desired pods that do not exist: beyond the capacity cap, waiting for the spawn limit or
        for a crash-loop backoff."""
        state = self._revisions[revision]
        return max(0, state.desired - len(state.live()))

    def capacity(self) -> dict[str, int]:
        """The cap, the pods that exist (starting, ready or draining) and the launches under way."""
        return {
            "max_pods": self.max_pods,
            "pods": sum(len(state.pods) for state in self._revisions.values()),
            "starting": self.spawn_limiter.in_flight,
        }

    def user_container_addresses(self, revision: RevisionKey) -> dict[str, str]:
        """Pod name -> the user container's own address (behind the queue-proxy), for diagnostics."""
        return {p.name: f"127.0.0.1:{p.user_port}" for p in self._revisions[revision].live() if p.user_port}

    def process_groups(self, revision: RevisionKey) -> dict[str, list[int]]:
        """Pod name -> process ids (queue-proxy, user container); each leads its own process group."""
        return {p.name: [proc.pid for proc in p.processes()] for p in self._revisions[revision].live()}

    def process_ids(self) -> list[int]:
        return [
            proc.pid
            for state in self._revisions.values()
            for pod in state.pods.values()
            for proc in pod.processes()
            if proc.returncode is None
        ]

    # ---- lifecycle --------------------------------------------------------------------------------

    async def start(self) -> None:
        self._http = httpx.AsyncClient(timeout=PROBE_TIMEOUT)
        self._guard.start()
        self._reconciler = asyncio.create_task(self._reconcile(), name="reconcile local pods")

    def stop_spawning(self) -> None:
        """Start no pod from now on and cancel the launches under way without waiting for them (each
        cancelled launch stops what it had started). The first step of any shutdown."""
        self._closing = True
        if self._reconciler is not None:
            self._reconciler.cancel()
        for state in self._revisions.values():
            for pod in state.pods.values():
                if pod.starting and pod.task is not None:
                    pod.task.cancel()

    async def close(self) -> None:
        """Stop spawning, stop every pod (drained, then terminated) and wait for all children."""
        self.stop_spawning()
        for state in self._revisions.values():
            state.desired = 0
        pods = [pod for state in self._revisions.values() for pod in state.pods.values()]
        await asyncio.gather(*(self._stop(pod, quick=True) for pod in pods), return_exceptions=True)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self.kill_all()
        self._guard.close()
        if self._http is not None:
            await self._http.aclose()

    def kill_all(self) -> None:
        """Last resort, safe from signal handlers and atexit: SIGKILL every child's process group."""
        for state in self._revisions.values():
            for pod in state.pods.values():
                for proc in pod.processes():
                    _kill_group(proc, signal.SIGKILL)

    # ---- convergence ------------------------------------------------------------------------------

    async def _reconcile(self) -> None:
        """One loop for all revisions (they share the cap and the spawn limiter): converge, then sleep
        until something changes or the clock frees a launch or ends a backoff."""
        while not self._closing:
            self._wake.clear()
            timeout = self._converge(self.clock())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)

    def _converge(self, now: float) -> float | None:
        """Stop pods beyond each revision's share of the cap, then start missing ones — one per
        revision in turn — while the cap and the spawn limiter allow. Returns the seconds until the
        clock alone makes progress possible (None: only a wake-up can)."""
        shares = allot({key: state.desired for key, state in self._revisions.items()}, self.max_pods)
        for key, state in self._revisions.items():
            self._set_share(state, shares[key])
            live = state.live()
            for pod in scale_down_order(live)[: max(0, len(live) - state.share)]:
                self._retire(pod)
        timeout: float | None = None
        hungry: dict[RevisionKey, int] = {}
        for key, state in self._revisions.items():
            missing = state.share - len(state.live())
            if missing > 0 and now < state.retry_at:
                timeout = _earliest(timeout, state.retry_at - now)
            elif missing > 0:
                hungry[key] = missing
        existing = sum(len(state.pods) for state in self._revisions.values())
        while hungry and existing < self.max_pods and self.spawn_limiter.allowed(now) > 0:
            for key in list(hungry):
                if existing >= self.max_pods or self.spawn_limiter.allowed(now) < 1:
                    break
                self.spawn_limiter.take(now)
                self._start_pod(self._revisions[key])
                existing += 1
                hungry[key] -= 1
                if not hungry[key]:
                    del hungry[key]
        if hungry and existing < self.max_pods:
            timeout = _earliest(timeout, self.spawn_limiter.wait(now))
        return timeout

    def _set_share(self, state: _RevisionPods, share: int) -> None:
        capped = share < state.desired
        if capped and not state.capped:
            log.warning(
                "%s: wants %d pods but the local capacity cap is %d pods in all (maxPods, --max-pods):"
                " %d pending",
                state.template.revision,
                state.desired,
                self.max_pods,
                state.desired - share,
            )
        state.capped = capped
        state.share = share

    def _start_pod(self, state: _RevisionPods) -> None:
        seq = next(self._names)
        pod = _Pod(f"{state.template.revision.name}-{seq}", seq, state.template, self.log_dir)
        state.pods[pod.name] = pod
        pod.task = self._spawn(self._run_pod(state, pod))
        pod.task.add_done_callback(lambda _task: self._pod_task_done(state, pod))

    def _pod_task_done(self, state: _RevisionPods, pod: _Pod) -> None:
        """Bookkeeping that must happen even for a launch cancelled before it ever ran."""
        self._launch_over(pod)
        pod.launched.set()
        if not pod.processes() and state.pods.get(pod.name) is pod:
            del state.pods[pod.name]
            self._wake.set()

    def _launch_over(self, pod: _Pod) -> None:
        if pod.starting:
            pod.starting = False
            self.spawn_limiter.finished()
            self._wake.set()

    def _retire(self, pod: _Pod) -> None:
        """Take a pod out of service: a launch under way is cancelled (it stops what it started at
        once), a ready pod is drained and stopped."""
        self._mark_terminating(pod)
        if pod.starting and pod.task is not None and not pod.task.done():
            pod.task.cancel()
        else:
            self._spawn(self._stop(pod))

    def _spawn(self, coro) -> asyncio.Task[None]:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _notify(self, state: _RevisionPods) -> None:
        pods = [p.info() for p in state.live() if p.serving_port]
        for listener in self._listeners:
            try:
                listener(state.template.revision, pods)
            except Exception:
                log.exception("pod listener failed")

    async def _run_pod(self, state: _RevisionPods, pod: _Pod) -> None:
        failure: str | None = None
        try:
            try:
                failure = await self._bring_up(state, pod)
            finally:
                self._launch_over(pod)
            if failure is None:
                failure = await self._watch(pod, state)
        except OSError as exc:
            failure = f"cannot start: {exc}"
        except asyncio.CancelledError:
            await self._stop(pod, quick=True)
            raise
        if failure is not None and not pod.terminating:
            self._record_failure(state, pod, failure)
            await self._stop(pod, quick=True)

    async def _bring_up(self, state: _RevisionPods, pod: _Pod) -> str | None:
        """Start both processes and wait for readiness; None when ready, else why not."""
        try:
            await self._launch(pod)
        finally:
            pod.launched.set()
        self._notify(state)  # the activator probes new pods itself, ready or not
        failure = await self._await_ready(pod)
        if failure is not None:
            return failure
        pod.ready_at = self.clock()
        log.info(
            "%s: pod %s ready in %.2fs (%s)",
            state.template.revision,
            pod.name,
            pod.ready_at - pod.started_at,
            pod.info().address,
        )
        self._notify(state)
        if state.failing:
            state.failing = False
            self._tell_failure(state, None)
        return None

    def _tell_failure(self, state: _RevisionPods, failure: PodFailure | None) -> None:
        for listener in self._failure_listeners:
            try:
                listener(state.template.revision, failure)
            except Exception:
                log.exception("pod failure listener failed")

    def _record_failure(self, state: _RevisionPods, pod: _Pod, reason: str) -> None:
        now = self.clock()
        healthy_for = now - pod.ready_at if pod.ready_at is not None else 0.0
        state.failures = 1 if healthy_for >= HEALTHY_RESET else state.failures + 1
        delay = 0.0 if state.failures == 1 else min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** (state.failures - 2))
        state.retry_at = now + delay
        tail = pod.output_tail()
        state.last_failure = PodFailure(pod.name, reason, tail, now)
        state.failing = True
        self._tell_failure(state, state.last_failure)
        log.warning(
            "%s: pod %s %s; %s%s",
            state.template.revision,
            pod.name,
            reason,
            f"retrying in {delay:.0f}s" if delay else "replacing it",
            "\n  last output:\n    " + tail.replace("\n", "\n    ") if tail else "",
        )

    async def _launch(self, pod: _Pod) -> None:
        template = pod.template
        pod.user_port = _free_port()
        # Knative gives the user container PORT and K_REVISION/K_CONFIGURATION/K_SERVICE.
        user_env = {
            **os.environ,
            "K_REVISION": template.revision.name,
            **template.env,
            template.port_env: str(pod.user_port),
        }
        with pod.log_path.open("ab") as out:
            pod.user = await asyncio.create_subprocess_exec(
                *template.command,
                env=user_env,
                cwd=template.workdir,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=out,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=self._preexec,
            )
        self._guard.watch(pod.user.pid)
        with pod.qp_log_path.open("ab") as err:
            pod.queue_proxy = await asyncio.create_subprocess_exec(
                *self.queue_proxy_command,
                "--admin-port",
                "0",
                "--stats-port",
                "0",
                "--metrics-port",
                "0",
                "--drain-timeout",
                str(template.drain_seconds),
                env=self._queue_proxy_env(pod),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=err,
                start_new_session=True,
                preexec_fn=self._preexec,
            )
        self._guard.watch(pod.queue_proxy.pid)
        ports = await self._read_ports(pod)
        pod.serving_port, pod.stats_port = ports["serving_port"], ports["stats_port"]
        self._spawn(_drain_to_file(pod.queue_proxy.stdout, pod.qp_log_path))

    def _queue_proxy_env(self, pod: _Pod) -> dict[str, str]:
        t = pod.template
        env = {
            **os.environ,
            "SERVING_NAMESPACE": t.revision.namespace,
            "SERVING_REVISION": t.revision.name,
            "SERVING_POD": pod.name,
            "SERVING_POD_IP": "127.0.0.1",
            "USER_PORT": str(pod.user_port),
            "QUEUE_SERVING_PORT": "0",
            "CONTAINER_CONCURRENCY": str(t.container_concurrency),
            "REVISION_TIMEOUT_SECONDS": str(t.timeout_seconds),
            "REVISION_IDLE_TIMEOUT_SECONDS": str(t.idle_timeout_seconds),
            **t.queue_proxy_env,
        }
        if t.readiness_probe:
            env["SERVING_READINESS_PROBE"] = t.readiness_probe
        if t.response_start_timeout_seconds is not None:
            env["REVISION_RESPONSE_START_TIMEOUT_SECONDS"] = str(t.response_start_timeout_seconds)
        return env

    async def _read_ports(self, pod: _Pod) -> dict[str, int]:
        """The queue-proxy binds port 0 and prints one JSON line naming the ports it got."""
        assert pod.queue_proxy is not None and pod.queue_proxy.stdout is not None
        try:
            line = await asyncio.wait_for(pod.queue_proxy.stdout.readline(), PORTS_TIMEOUT)
        except TimeoutError:
            raise OSError(f"queue-proxy did not report its ports within {PORTS_TIMEOUT:.0f}s") from None
        try:
            doc = json.loads(line)
            return {key: int(doc[key]) for key in ("serving_port", "stats_port")}
        except (ValueError, KeyError, TypeError):
            code = pod.queue_proxy.returncode
            raise OSError(
                f"queue-proxy {'exited' if code is not None else 'printed'} {line[:200]!r} "
                f"instead of its ports"
            ) from None

    async def _await_ready(self, pod: _Pod) -> str | None:
        """Probe the queue-proxy (which probes the user container) until it answers; None when ready."""
        deadline = time.monotonic() + pod.template.startup_timeout
        url = f"http://127.0.0.1:{pod.serving_port}/"
        headers = {"K-Network-Probe": "queue", "User-Agent": "kube-probe/kpa"}
        while time.monotonic() < deadline:
            exited = _exit_reason(pod)
            if exited:
                return exited + " before becoming ready"
            with contextlib.suppress(httpx.HTTPError):
                answer = await self._http.get(url, headers=headers)
                if answer.status_code == 200:
                    return None
            await asyncio.sleep(PROBE_INTERVAL)
        return f"did not become ready within {pod.template.startup_timeout:g}s (startupTimeoutSeconds)"

    async def _watch(self, pod: _Pod, state: _RevisionPods) -> str | None:
        """Wait until the pod is told to stop (None) or one of its processes dies (the reason)."""
        waits = [asyncio.ensure_future(p.wait()) for p in pod.processes()]
        stop = asyncio.ensure_future(pod.stop_requested.wait())
        try:
            await asyncio.wait([*waits, stop], return_when=asyncio.FIRST_COMPLETED)
        finally:
            for fut in (*waits, stop):
                fut.cancel()
        if pod.stop_requested.is_set():
            return None
        if pod.ready_at is not None and self.clock() - pod.ready_at >= HEALTHY_RESET:
            state.failures = 0
        return "crashed: " + (_exit_reason(pod) or "a process exited")

    def _mark_terminating(self, pod: _Pod) -> None:
        """Take the pod out of the routing tables (synchronously, before its drain starts)."""
        if not pod.terminating:
            pod.terminating = True
            pod.stop_requested.set()
            self._notify(self._revisions[pod.template.revision])
            self._wake.set()

    async def _stop(self, pod: _Pod, quick: bool = False) -> None:
        """Drain the queue-proxy (SIGTERM; it finishes in-flight requests), then stop the user container."""
        state = self._revisions[pod.template.revision]
        self._mark_terminating(pod)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(pod.launched.wait(), PORTS_TIMEOUT + 1.0)
        qp, user = pod.queue_proxy, pod.user
        drain_limit = 1.0 if quick else pod.template.timeout_seconds + pod.template.drain_seconds + 5.0
        if qp is not None and qp.returncode is None:
            _kill_group(qp, signal.SIGTERM)
            if not await _wait(qp, drain_limit):
                log.warning(
                    "%s: queue-proxy of %s did not drain in %.0fs; killing it",
                    pod.template.revision,
                    pod.name,
                    drain_limit,
                )
                _kill_group(qp, signal.SIGKILL)
                await _wait(qp, 2.0)
        if user is not None and user.returncode is None:
            _kill_group(user, signal.SIGTERM)
            if not await _wait(user, 1.0 if quick else STOP_GRACE):
                _kill_group(user, signal.SIGKILL)
                await _wait(user, 2.0)
        for proc in (qp, user):
            if proc is not None:
                _kill_group(proc, signal.SIGKILL)  # anything the children left in their groups
                self._guard.forget(proc.pid)
        if state.pods.get(pod.name) is pod:
            del state.pods[pod.name]
        self._wake.set()


def _exit_reason(pod: _Pod) -> str | None:
    for label, proc in (("user container", pod.user), ("queue-proxy", pod.queue_proxy)):
        if proc is not None and proc.returncode is not None:
            code = proc.returncode
            how = f"killed by {signal.Signals(-code).name}" if code < 0 else f"exited with code {code}"
            return f"{label} {how}"
    return None


def _earliest(a: float | None, b: float | None) -> float | None:
    return b if a is None else a if b is None else min(a, b)


async def _wait(proc: asyncio.subprocess.Process, timeout: float) -> bool:
    try:
        await asyncio.wait_for(proc.wait(), timeout)
        return True
    except TimeoutError:
        return False


def _kill_group(proc: asyncio.subprocess.Process, sig: signal.Signals) -> None:
    """Signal the child's whole process group (children run with start_new_session=True)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


async def _drain_to_file(stream: asyncio.StreamReader | None, path: Path) -> None:
    if stream is None:
        return
    with path.open("ab") as out:
        while chunk := await stream.read(65536):
            out.write(chunk)
            out.flush()


def _free_port() -> int:
    """A loopback port free right now; the user container binds it a moment later."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
