"""Leader election for ``kpa controller``: the asyncio shell around :mod:`kubebackend.leader`.

Every retry period a :class:`LeaderElector` reads the Lease, asks :func:`kubebackend.leader.decide`
what to do and does it; while it leads it renews by writing on the record it last wrote (client-go's
fast path: one request per renewal) and reads again only when that write fails. ``on_started_leading``
runs when it becomes leader and ``on_stopped_leading`` the moment it must stop — when the renew
deadline passes without a successful renewal even while a request is still hanging, when the Lease
names another holder, and on close — so the controller stops scaling before anyone else can start.
After losing, the elector goes on as a candidate: it may lead again later, and calls
``on_started_leading`` again when it does.

The leader also labels its own pod ``kpa-emulator.dev/leader: "true"`` (and removes the label from
any other pod still carrying it, a former leader that could not clean up): Service
``kpa-controller-leader`` selects on it, so the stats the activators push reach the leader. It
removes its label when it stops leading.

The Kubernetes client blocks, so its calls run on two single-thread executors of the elector's own
(Lease calls, pod-label calls), never on the event loop and never queued behind the informers'
long-running watches on the default executor. Lease bodies are sent and read as raw JSON so the
timestamps are exactly the MicroTime :mod:`kubebackend.leader` wrote. Every failure passes: a 409
means another replica won this round, a 5xx or no answer that we try again next period.

API calls made (kubebackend/rbac.py): leases get/create/update in the Lease's namespace; pods
patch (its own, and any other pod's leader label) and list (pods with the leader label).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import random
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from kubernetes.client import ApiClient

from kubebackend.leader import (
    Action,
    Decision,
    Durations,
    Observed,
    decide,
    jittered,
    observe,
    release,
    renew_deadline_passed,
)
from kubebackend.leader_calls import LeaseCalls, PodLabels, holder_identity
from kubebackend.rbac import CONTROLLER, SYSTEM_NAMESPACE
from kubebackend.retry import describe, status_of

log = logging.getLogger("kpa.controller")

UNLABEL_TRIES = 3  # a pod that cannot remove its label leaves it to the next leader

# Called on the event loop; a callback may be a coroutine function (``Controller.became_leader``):
# its coroutine runs as a task, so the election never waits on it.
Callback = Callable[[], Awaitable[None] | None]
T = TypeVar("T")


class LeaderElector:
    """Campaigns for the Lease and keeps it; see the module docstring.

    ``start()`` on a running loop, ``close()`` to stop: it calls ``on_stopped_leading`` if leading,
    then (``release_on_close``) hands the Lease over so the standby takes over within one retry
    period instead of a lease duration. Callbacks run on the event loop and must not block; a
    coroutine callback runs as a task (``close`` waits for the stop callback's before releasing, so
    the controller has stopped scaling before the standby starts). ``pod_name`` None: no pod label
    (outside a cluster).
    """

    def __init__(
        self,
        api_client: ApiClient,
        *,
        identity: str,
        on_started_leading: Callback,
        on_stopped_leading: Callback,
        namespace: str = SYSTEM_NAMESPACE,
        name: str = CONTROLLER,
        durations: Durations | None = None,
        release_on_close: bool = True,
        pod_name: str | None = None,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.identity = identity
        self.durations = durations or Durations()
        self.namespace = namespace
        self.pod_name = pod_name
        self.release_on_close = release_on_close
        self._on_started, self._on_stopped = on_started_leading, on_stopped_leading
        self._rng = rng or random.Random()
        self._clock, self._wall = clock, wall_clock
        self._request_timeout = self.durations.renew_deadline / 2
        self._leases = LeaseCalls(api_client, namespace, name, self._request_timeout)
        self._labels = (
            PodLabels(api_client, namespace, pod_name, self._request_timeout)
            if pod_name is not None
            else None
        )
        self._lease_executor = ThreadPoolExecutor(1, thread_name_prefix="leader-lease")
        self._label_executor = ThreadPoolExecutor(1, thread_name_prefix="leader-label")
        self._observed: Observed | None = None
        self._renewed_at: float | None = None  # when our last successful write was sent, while leading
        self._started = False  # on_started_leading ran and on_stopped_leading has not since
        self._closing = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._label_task: asyncio.Task[None] | None = None
        self._callbacks: set[asyncio.Future[None]] = set()  # coroutine callbacks still running
        self.last_decision: Decision | None = None

    @classmethod
    def from_environment(
        cls, api_client: ApiClient, on_started_leading: Callback, on_stopped_leading: Callback, **options: Any
    ) -> LeaderElector:
        """The elector of a controller pod: identity and label from ``POD_NAME``, the Lease in
        ``POD_NAMESPACE`` (default kpa-system)."""
        pod = os.environ.get("POD_NAME") or None
        options.setdefault("namespace", os.environ.get("POD_NAMESPACE") or SYSTEM_NAMESPACE)
        return cls(
            api_client,
            identity=holder_identity(pod),
            on_started_leading=on_started_leading,
            on_stopped_leading=on_stopped_leading,
            pod_name=pod,
            **options,
        )

    # ---- views --------------------------------------------------------------------------------

    @property
    def leading(self) -> bool:
        return self._renewed_at is not None

    @property
    def holder(self) -> str:
        """The holder named by the Lease as last read or written ("" unknown or released)."""
        return self._observed.record.holder if self._observed else ""

    # ---- lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"leader election {self.identity}")

    async def close(self) -> None:
        """Stop campaigning; stop leading (callback first), release the Lease, drop the label."""
        self._closing.set()
        if self._task is not None:
            # The loop ends after its current step; a step waits at most about one request timeout.
            done, _ = await asyncio.wait({self._task}, timeout=self._request_timeout + 1.0)
            if not done:
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
        was_leading = self.leading
        self._stop_leading("shutting down", unlabel=False)
        if self._callbacks:
            await asyncio.wait(list(self._callbacks), timeout=self.durations.renew_deadline)
        if self.release_on_close and (was_leading or self.holder == self.identity):
            await self._release()
        if self._label_task is not None:
            self._label_task.cancel()
        if self._labels is not None and was_leading:
            try:
                await self._label_call(self._labels.unmark)
            except Exception as error:  # the next leader removes it
                log.warning(
                    "leader election: could not remove the leader label at shutdown: %s", describe(error)
                )
        for executor in (self._lease_executor, self._label_executor):
            await asyncio.get_running_loop().run_in_executor(None, executor.shutdown)

    # ---- the loop -----------------------------------------------------------------------------

    async def _run(self) -> None:
        while not self._closing.is_set():
            try:
                await self._step()
            except Exception:
                log.exception("leader election step failed")
            if self.leading:
                delay = self.durations.retry
            else:
                delay = jittered(self.durations.retry, self._rng.random())
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._closing.wait()

    async def _step(self) -> None:
        durations = self.durations
        if renew_deadline_passed(self._renewed_at, self._clock(), durations):
            self._stop_leading(f"no renewal for the renew deadline ({durations.renew_deadline:g} s)")
        if self.leading and self._observed is not None and await self._renew_fast():
            return
        try:
            found = await self._lease_call(self._leases.read)
        except Exception as error:
            log.warning("leader election: reading Lease %s failed: %s", self._leases.name, describe(error))
            return
        now = self._clock()
        self._observed = observe(self._observed, *found, now) if found is not None else None
        decision = self._decide(now)
        if decision.action is Action.LOST:
            self._stop_leading(decision.reason)
        elif decision.action is not Action.WAIT:
            await self._write(decision)

    def _decide(self, now: float) -> Decision:
        decision = decide(
            self._observed,
            identity=self.identity,
            now=now,
            wall_now=self._wall(),
            durations=self.durations,
            renewed_at=self._renewed_at,
        )
        previous, self.last_decision = self.last_decision, decision
        if previous is None or previous.action is not decision.action:
            log.info("leader election %s: %s (%s)", self.identity, decision.action.value, decision.reason)
        return decision

    async def _renew_fast(self) -> bool:
        """Renew on the record we last wrote, without reading it first; False: read and decide."""
        decision = self._decide(self._clock())
        if decision.action is not Action.RENEW:
            return False
        return await self._write(decision)

    async def _write(self, decision: Decision) -> bool:
        assert decision.write is not None
        sent_at = self._clock()
        try:
            if decision.action is Action.CREATE:
                found = await self._lease_call(self._leases.create, decision.write)
            else:
                assert self._observed is not None
                found = await self._lease_call(
                    self._leases.replace, decision.write, self._observed.resource_version
                )
        except Exception as error:
            if status_of(error) == 409:
                log.info(
                    "leader election: %s lost the race (409): another replica wrote first",
                    decision.action.value,
                )
            else:
                log.warning("leader election: %s failed: %s", decision.action.value, describe(error))
            return False
        assert found is not None
        now = self._clock()
        self._observed = Observed(found[0], found[1], now)
        if now - sent_at >= self.durations.renew_deadline:
            return True  # written, but too late to lead on: the next step renews afresh
        self._renewed_at = sent_at
        self._start_leading(decision.reason)  # nothing to do when already leading
        return True

    async def _release(self) -> None:
        """Read the Lease and, if it still names us, write client-go's release record."""
        try:
            found = await self._lease_call(self._leases.read)
            if found is None:
                return
            self._observed = observe(self._observed, *found, self._clock())
            record = release(self._observed, self.identity, self._wall())
            if record is not None:
                await self._lease_call(self._leases.replace, record, self._observed.resource_version)
                log.info("leader election %s: released the Lease", self.identity)
        except Exception as error:  # the standby takes over after the lease duration instead
            log.warning("leader election: release failed: %s", describe(error))

    # ---- leading or not -----------------------------------------------------------------------

    def _start_leading(self, reason: str) -> None:
        if self._started:
            return
        self._started = True
        log.info("leader election %s: leading (%s)", self.identity, reason)
        self._call_back(self._on_started, "on_started_leading")
        self._relabel(leading=True)

    def _stop_leading(self, reason: str, *, unlabel: bool = True) -> None:
        self._renewed_at = None
        if not self._started:
            return
        self._started = False
        log.warning("leader election %s: stopped leading (%s)", self.identity, reason)
        self._call_back(self._on_stopped, "on_stopped_leading")
        if unlabel:
            self._relabel(leading=False)

    def _call_back(self, callback: Callback, what: str) -> None:
        try:
            outcome = callback()
            if outcome is not None:
                task = asyncio.ensure_future(outcome)
                self._callbacks.add(task)
                task.add_done_callback(functools.partial(self._callback_done, what))
        except Exception:
            log.exception("%s failed", what)

    def _callback_done(self, what: str, task: asyncio.Future[None]) -> None:
        self._callbacks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("%s failed", what, exc_info=task.exception())

    # ---- calls off the loop -------------------------------------------------------------------

    async def _lease_call(self, call: Callable[..., T], *args: Any) -> T:
        """Run a Lease call on its thread; while leading, stop leading the moment the renew deadline
        passes even if the call has not returned (it is then awaited as a candidate's)."""
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(self._lease_executor, call, *args)
        if self._renewed_at is None:
            return await future
        remaining = self._renewed_at + self.durations.renew_deadline - self._clock()
        try:
            async with asyncio.timeout(max(remaining, 0.0)):
                return await asyncio.shield(future)
        except TimeoutError:
            self._stop_leading(
                f"no renewal for the renew deadline ({self.durations.renew_deadline:g} s);"
                " a request is still pending"
            )
            return await future

    async def _label_call(self, call: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._label_executor, call, *args)

    # ---- the leader label ---------------------------------------------------------------------

    def _relabel(self, *, leading: bool) -> None:
        if self._labels is None:
            return
        if self._label_task is not None:
            self._label_task.cancel()  # a call already on the label thread still runs, in order
        work = self._mark_leader(self._labels) if leading else self._unmark_self(self._labels)
        self._label_task = asyncio.create_task(work, name=f"leader label {self.pod_name}")

    async def _mark_leader(self, labels: PodLabels) -> None:
        """Label our pod, then take the label off any other pod; retried while we lead."""
        while self.leading and not self._closing.is_set():
            try:
                await self._label_call(labels.mark)
                return
            except Exception as error:
                log.warning("leader election: labelling pod %s failed: %s", self.pod_name, describe(error))
            await asyncio.sleep(self.durations.retry)

    async def _unmark_self(self, labels: PodLabels) -> None:
        for _ in range(UNLABEL_TRIES):
            if self.leading or self._closing.is_set():
                return
            try:
                await self._label_call(labels.unmark)
                return
            except Exception as error:
                log.warning("leader election: unlabelling pod %s failed: %s", self.pod_name, describe(error))
            await asyncio.sleep(self.durations.retry)
