"""One pod on the fake kubelet: its containers' processes, readiness probes and termination.

A ``PodRun`` starts every container at once (no init containers, no ordering), watches each
process, runs each readiness probe on its own timing (``initialDelaySeconds``, then every
``periodSeconds``, ``timeoutSeconds`` each, ready after ``successThreshold`` passes, not ready
after ``failureThreshold`` failures), and tells its owner (``report``) whenever what the status
says changes. It restarts nothing. ``terminate`` stops the pod as kubelet does on a graceful
delete: each running container's preStop hook, then SIGTERM to its process group, then SIGKILL
once the grace period is over (at least 2 s after a hook that used it all up). ``kill`` is the
SIGKILL of a pod dying outright. Everything here runs on the kubelet's event-loop thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Callable, Coroutine
from dataclasses import replace
from pathlib import Path
from typing import Any

from fakecluster import processes
from fakecluster.pod_spec import Launch, Probe
from fakecluster.pod_status import ContainerView, PodView

log = logging.getLogger("fakecluster.kubelet")
HOOK_OVERRUN_S = 2.0  # kubelet's one-off extension after a preStop hook that used up the grace period


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


class PodRun:
    """The processes of one pod and what the kubelet knows of them."""

    def __init__(
        self,
        namespace: str,
        name: str,
        uid: str,
        ip: str,
        launches: list[Launch],
        log_dir: Path,
        report: Callable[[PodRun], None],
    ) -> None:
        self.namespace, self.name, self.uid, self.ip = namespace, name, uid, ip
        self.launches = launches
        self.log_dir = log_dir
        self.start_time = _now()
        self.views = [ContainerView(launch.name, launch.image) for launch in launches]
        self.procs: list[asyncio.subprocess.Process | None] = [None] * len(launches)
        self.terminating = False
        self.closing = False  # the kubelet is going away: no more reports
        self._report = report
        self._tasks: set[asyncio.Task[None]] = set()
        self._deadline: float | None = None
        self.started = asyncio.Event()  # every container started or failed to
        self.stopped = asyncio.Event()  # every container exited (or never started)

    def log_path(self, container: str) -> Path:
        return self.log_dir / f"{self.namespace}_{self.name}_{container}.log"

    def view(self) -> PodView:
        return PodView(self.ip, self.start_time, tuple(self.views))

    @property
    def finished(self) -> bool:
        """Every container has exited (or never started)."""
        return all(view.exit_code is not None for view in self.views)

    def _set(self, index: int, **changes: Any) -> None:
        before = self.views[index]
        after = replace(before, **changes)
        if after != before:
            self.views[index] = after
            if not self.closing:
                self._report(self)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def start(self, preexec: Callable[[], None] | None) -> None:
        """Start every container; one that cannot start is ``terminated`` with reason StartError."""
        for index, launch in enumerate(self.launches):
            try:
                started = await processes.start(launch, self.log_path(launch.name), preexec)
            except OSError as error:
                self.views[index] = replace(
                    self.views[index], exit_code=128, reason="StartError", message=str(error),
                    started_at=_now(), finished_at=_now(),
                )  # fmt: skip
                continue
            self.procs[index] = started
            self.views[index] = replace(
                self.views[index], started_at=_now(), pid=started.pid, ready=launch.readiness is None
            )
        for index, proc in enumerate(self.procs):
            if proc is not None:
                self._spawn(self._watch(index, proc))
                probe = self.launches[index].readiness
                if probe is not None and not self.terminating:
                    self._spawn(self._probe(index, probe))
        self.started.set()
        if self.finished:
            self.stopped.set()
        if not self.closing:
            self._report(self)

    async def _watch(self, index: int, proc: asyncio.subprocess.Process) -> None:
        code = await proc.wait()
        processes.kill_group(proc.pid, signal.SIGKILL)  # whatever it left in its group
        exit_code = 128 - code if code < 0 else code  # a signal, as a container runtime reports it
        reason = "Completed" if exit_code == 0 else "Error"
        self._set(index, exit_code=exit_code, finished_at=_now(), ready=False, reason=reason)
        if self.finished:
            self.stopped.set()

    async def _probe(self, index: int, probe: Probe) -> None:
        launch = self.launches[index]
        await asyncio.sleep(probe.initial_delay_s)
        passed = failed = 0
        while self.views[index].exit_code is None:
            ok, what = await processes.attempt(probe, launch.env, launch.cwd, probe.timeout_s)
            passed, failed = (passed + 1, 0) if ok else (0, failed + 1)
            if ok and passed >= probe.success_threshold:
                self._set(index, ready=True)
            elif not ok and failed >= probe.failure_threshold:
                self._set(index, ready=False)
            if not ok:
                log.debug(
                    "pod %s/%s container %s: readiness: %s", self.namespace, self.name, launch.name, what
                )
            await asyncio.sleep(probe.period_s)

    def mark_terminating(self, grace_s: float) -> bool:
        """A graceful delete with ``grace_s``: True the first time (run ``terminate`` then); a later,
        shorter grace only brings the deadline forward."""
        deadline = asyncio.get_running_loop().time() + grace_s
        if self._deadline is not None:
            self._deadline = min(self._deadline, deadline)
            return False
        self._deadline, self.terminating = deadline, True
        return True

    async def terminate(self) -> None:
        """Stop every container by the deadline ``mark_terminating`` set; returns once all exited."""
        await self.started.wait()
        await asyncio.gather(*(self._stop(index) for index in range(len(self.launches))))
        await self.stopped.wait()

    async def _stop(self, index: int) -> None:
        proc, launch = self.procs[index], self.launches[index]
        if proc is None or proc.returncode is not None:
            return
        loop = asyncio.get_running_loop()
        overran = False
        if launch.pre_stop is not None:
            left = max(0.0, (self._deadline or 0.0) - loop.time())
            ok, what = await processes.attempt(launch.pre_stop, launch.env, launch.cwd, max(left, 0.001))
            if not ok:
                log.warning(
                    "pod %s/%s container %s: preStop hook: %s", self.namespace, self.name, launch.name, what
                )
            overran = loop.time() >= (self._deadline or 0.0)
        processes.kill_group(proc.pid, signal.SIGTERM)
        overrun_end = loop.time() + HOOK_OVERRUN_S if overran else 0.0
        while proc.returncode is None:
            left = max((self._deadline or 0.0) - loop.time(), overrun_end - loop.time())
            if left <= 0:
                processes.kill_group(proc.pid, signal.SIGKILL)
                await proc.wait()
                break
            with contextlib.suppress(TimeoutError):  # in slices: a second delete may shorten the grace
                async with asyncio.timeout(min(left, 0.25)):
                    await asyncio.shield(proc.wait())
        processes.kill_group(proc.pid, signal.SIGKILL)

    async def kill_when_started(self) -> None:
        """``kill``, once ``start`` is done (so no container starts after it), then wait for the exits."""
        await self.started.wait()
        self.kill()
        await self.stopped.wait()

    def kill(self) -> None:
        """SIGKILL every container's process group now: the pod dies as a node losing it would."""
        for proc in self.procs:
            if proc is not None and proc.returncode is None:
                processes.kill_group(proc.pid, signal.SIGKILL)

    async def close(self, grace_s: float) -> None:
        """The kubelet is stopping: SIGTERM, SIGKILL after ``grace_s``, no more status reports."""
        self.closing = True
        for proc in self.procs:
            if proc is not None and proc.returncode is None:
                processes.kill_group(proc.pid, signal.SIGTERM)
        waits = [proc.wait() for proc in self.procs if proc is not None and proc.returncode is None]
        if waits:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(grace_s):
                    await asyncio.gather(*waits)
        for proc in self.procs:
            if proc is not None:
                processes.kill_group(proc.pid, signal.SIGKILL)
                if proc.returncode is None:
                    await proc.wait()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def cancel_probes(self) -> None:
        for task in list(self._tasks):
            task.cancel()
