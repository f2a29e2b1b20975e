"""Pods as local processes: a queue-proxy child plus the user-container child, on loopback ports.

This is the Kubernetes Deployment controller and kubelet of the local stack, cut down to what the
autoscaler needs: converge each revision to its desired pod count, tell who is ready, notice pods
that die and replace them, and stop pods the way Knative does (``localbackend.pod_process`` starts,
probes and drains each pod's processes; this module decides which pods exist).

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
import logging
import signal
import time
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from autoscaler.actuator import PodInfo, PodsListener
from autoscaler.stat import RevisionKey
from localbackend.capacity import allot, default_max_pods, machine_resources
from localbackend.pod import FailureListener, Pod, PodFailure, PodTemplate, scale_down_order
from localbackend.pod_process import QUEUE_PROXY_COMMAND, PodProcesses, kill_group
from localbackend.scrape_targets import PodPorts
from localbackend.spawn_limit import SpawnLimiter

log = logging.getLogger("kpa.actuator")

BACKOFF_FIRST = 1.0  # seconds before retrying after a second consecutive failure
BACKOFF_MAX = 30.0
HEALTHY_RESET = 10.0  # a pod ready this long clears the failure count
# Spawn pacing: launches under way at once (each is an interpreter start on the same cores) and the
# steady launch rate; a fresh stack may start a burst of SPAWN_BURST pods at once.
SPAWN_IN_FLIGHT_PER_CORE = 2
SPAWN_IN_FLIGHT_MIN = 4
SPAWN_PER_SECOND = 10.0
SPAWN_BURST = 10


class _RevisionPods:
    def __init__(self, template: PodTemplate) -> None:
        self.template = template
        self.desired = 0
        self.share = 0  # pods it may have under the capacity cap (<= desired)
        self.capped = False  # share < desired (logged once each time it becomes so)
        self.pods: dict[str, Pod] = {}
        self.failures = 0
        self.retry_at = 0.0
        self.last_failure: PodFailure | None = None
        self.failing = False  # a failure was recorded and no pod has become ready since

    def live(self) -> list[Pod]:
        return [p for p in self.pods.values() if not p.terminating]


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
        self._processes = PodProcesses(queue_proxy_command, self._spawn)

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

    def add_user_env(self, env: Mapping[str, str]) -> None:
        """More environment for every user container started from now on (e.g. the stack's entry URL,
        known only once the entry listens)."""
        for state in self._revisions.values():
            state.template = replace(state.template, env={**state.template.env, **env})

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

    def metrics_ports(self) -> list[PodPorts]:
        """Every pod whose processes run (terminating ones too: they serve until they exit)."""
        return [
            PodPorts(ref.namespace, ref.name, pod.name, pod.metrics_port, pod.user_port)
            for ref, state in self._revisions.items()
            for pod in state.pods.values()
            if pod.processes()
        ]

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
        self._processes.start()
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
        await self._processes.close()

    def kill_all(self) -> None:
        """Last resort, safe from signal handlers and atexit: SIGKILL every child's process group."""
        for state in self._revisions.values():
            for pod in state.pods.values():
                for proc in pod.processes():
                    kill_group(proc, signal.SIGKILL)

    # ---- convergence ------------------------------------------------------------------------------

    async def _reconcile(self) -> None:
        """One loop for all revisions (they share the cap and the spawn limiter): converge, then sleep
        until something changes or the clock frees a launch or ends a backoff."""
        while not self._closing:
            self._wake.clear()
            timeout = self._converge(self.clock())
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._wake.wait()

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
        pod = Pod(f"{state.template.revision.name}-{seq}", seq, state.template, self.log_dir)
        state.pods[pod.name] = pod
        pod.task = self._spawn(self._run_pod(state, pod))
        pod.task.add_done_callback(lambda _task: self._pod_task_done(state, pod))

    def _pod_task_done(self, state: _RevisionPods, pod: Pod) -> None:
        """Bookkeeping that must happen even for a launch cancelled before it ever ran."""
        self._launch_over(pod)
        pod.launched.set()
        if not pod.processes() and state.pods.get(pod.name) is pod:
            del state.pods[pod.name]
            self._wake.set()

    def _launch_over(self, pod: Pod) -> None:
        if pod.starting:
            pod.starting = False
            self.spawn_limiter.finished()
            self._wake.set()

    def _retire(self, pod: Pod) -> None:
        """Take a pod out of service: a launch under way is cancelled (it stops what it started at
        once), a ready pod is drained and stopped."""
        self._mark_terminating(pod)
        if pod.starting and pod.task is not None and not pod.task.done():
            pod.task.cancel()
        else:
            self._spawn(self._stop(pod))

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
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

    async def _run_pod(self, state: _RevisionPods, pod: Pod) -> None:
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

    async def _bring_up(self, state: _RevisionPods, pod: Pod) -> str | None:
        """Start both processes and wait for readiness; None when ready, else why not."""
        try:
            await self._processes.launch(pod)
        finally:
            pod.launched.set()
        self._notify(state)  # the activator probes new pods itself, ready or not
        failure = await self._processes.await_ready(pod)
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

    def _record_failure(self, state: _RevisionPods, pod: Pod, reason: str) -> None:
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

    async def _watch(self, pod: Pod, state: _RevisionPods) -> str | None:
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
        return "crashed: " + (pod.exit_reason() or "a process exited")

    def _mark_terminating(self, pod: Pod) -> None:
        """Take the pod out of the routing tables (synchronously, before its drain starts)."""
        if not pod.terminating:
            pod.terminating = True
            pod.stop_requested.set()
            self._notify(self._revisions[pod.template.revision])
            self._wake.set()

    async def _stop(self, pod: Pod, quick: bool = False) -> None:
        """Take the pod out of the routing tables, drain and stop its processes, then forget it."""
        state = self._revisions[pod.template.revision]
        self._mark_terminating(pod)
        await self._processes.stop(pod, quick)
        if state.pods.get(pod.name) is pod:
            del state.pods[pod.name]
            self._notify(state)  # listeners that track processes (the scrape target file) see it gone
        self._wake.set()


def _earliest(a: float | None, b: float | None) -> float | None:
    return b if a is None else a if b is None else min(a, b)
