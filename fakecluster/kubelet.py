"""A kubelet stand-in for the fake cluster: pods run as local processes, each on its own loopback IP.

    with Kubelet(max_pods=8) as kubelet, FakeApiServer(controllers=kubelet.controllers) as server:
        ...                                  # Deployments get pods; pods run, probe, stop
        kubelet.kill_pod("ns", "web-abc12")  # SIGKILL its processes: a pod dying mid-request

``controllers`` plugs three stand-ins into the fake's controller seam (in place of
``settle_deployments``): the Deployment controller (``fakecluster.deployments``), this kubelet, and
the EndpointSlice controller (``fakecluster.endpointslices``). One node, ``fake-node`` at
127.0.0.1, takes every pod up to ``max_pods`` (more stay Pending, ``Unschedulable``, until a slot
frees). Each pod gets the next free address of 127.0.1.1, 127.0.1.2 … 127.0.2.1 … 127.0.254.254
(Linux routes all of 127/8 to the loopback device; the first one is picked at random, so two test
runs on one machine rarely meet), so every pod can listen on the real ports (8012, 9090, 8022, 8080)
as on a cluster. How a container learns its address is in ``fakecluster.pod_spec`` and
docs/fake-cluster.md. Container output goes to ``log_dir`` (a temporary folder removed on close
unless given): ``<namespace>_<pod>_<container>.log``, read back with ``logs``.

The kubelet runs on a thread of its own with an asyncio loop; the controller seam only hands it
changes. Closing it SIGTERMs every container, SIGKILLs what is left after ``stop_grace_s`` and
joins the thread, without writing to the cluster.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import shutil
import tempfile
import threading
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from fakecluster import pod_spec, processes
from fakecluster.cluster import Cluster, Controller
from fakecluster.deployments import DeploymentController
from fakecluster.endpointslices import sync_endpoint_slices
from fakecluster.errors import ApiError
from fakecluster.pod_run import PodRun
from fakecluster.pod_status import ContainerView, PodView, pod_status
from fakecluster.resources import CONFIGMAPS, DEPLOYMENTS, PODS
from fakecluster.store import Change

log = logging.getLogger("fakecluster.kubelet")

NODE_NAME = "fake-node"
DEFAULT_MAX_PODS = 16
CALL_TIMEOUT_S = 10.0
_ADDRESSES = 254 * 254  # 127.0.1.1 … 127.0.254.254


def pod_address(index: int) -> str:
    """The ``index``-th pod address: 127.0.1.1 … 127.0.1.254, 127.0.2.1 …"""
    return f"127.0.{1 + index // 254}.{1 + index % 254}"


class Kubelet:
    """The fake cluster's node: see the module docstring. Use as a context manager."""

    def __init__(
        self,
        *,
        max_pods: int = DEFAULT_MAX_PODS,
        node_name: str = NODE_NAME,
        log_dir: Path | None = None,
        stop_grace_s: float = 2.0,
        env: Mapping[str, str] | None = None,
        entrypoints: pod_spec.Entrypoints | None = None,
    ) -> None:
        if max_pods < 1:
            raise ValueError(f"max_pods={max_pods}: the node must take at least one pod")
        self.max_pods = max_pods
        self.node_name = node_name
        self.stop_grace_s = stop_grace_s
        self.base_env = {**os.environ, **(env or {})}  # the host's environment stands in for the image's
        # image -> argv: what a container of that image without `command` runs (its ENTRYPOINT)
        self.entrypoints = {image: tuple(argv) for image, argv in (entrypoints or {}).items()}
        self._own_log_dir = log_dir is None
        self.log_dir = Path(tempfile.mkdtemp(prefix="fakecluster-kubelet-")) if log_dir is None else log_dir
        self._cluster: Cluster | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._closing = False
        self._runs: dict[str, PodRun] = {}  # by pod uid
        self._pending: dict[str, tuple[str, str]] = {}  # uid -> (namespace, name), oldest first
        # A random first address: two test runs on one machine (two kubelets) rarely pick the same one.
        self._next_address = random.randrange(_ADDRESSES)
        self._deployments: DeploymentController | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._preexec = processes.die_with_parent()

    @property
    def controllers(self) -> list[Controller]:
        """For ``FakeApiServer(controllers=...)``: Deployments, this kubelet, EndpointSlices."""
        return [self._observe, sync_endpoint_slices]

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> Self:
        ready = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            loop.call_soon(ready.set)
            try:
                loop.run_forever()
            finally:
                loop.close()

        self._thread = threading.Thread(target=run, name="fakecluster-kubelet", daemon=True)
        self._thread.start()
        if not ready.wait(CALL_TIMEOUT_S):
            raise RuntimeError(f"the fake kubelet's event loop did not start within {CALL_TIMEOUT_S} s")
        return self

    def close(self) -> None:
        """Stop every pod's processes (SIGTERM, then SIGKILL), the thread, and remove a temporary log dir."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None or self._closing:
            return
        self._closing = True
        try:
            asyncio.run_coroutine_threadsafe(self._shutdown(), loop).result(
                self.stop_grace_s + CALL_TIMEOUT_S
            )
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(CALL_TIMEOUT_S)
            if self._own_log_dir:
                shutil.rmtree(self.log_dir, ignore_errors=True)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    async def _shutdown(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*(run.close(self.stop_grace_s) for run in self._runs.values()))
        await asyncio.gather(*self._tasks, return_exceptions=True)

    # -- for tests -------------------------------------------------------------------------------

    def kill_pod(self, namespace: str, name: str) -> None:
        """SIGKILL every process of pod ``namespace/name`` (it stays, its containers ``terminated``)."""
        self._call(self._kill, namespace, name)

    def pod_ip(self, namespace: str, name: str) -> str:
        return self._call(lambda: self._find(namespace, name).ip)

    def logs(self, namespace: str, name: str, container: str | None = None) -> str:
        """What the pod's containers (or one of them) wrote, for a failing test's message."""
        pattern = f"{namespace}_{name}_{container or '*'}.log"
        return "".join(
            f"--- {path.name}\n{path.read_text(errors='replace')}"
            for path in sorted(self.log_dir.glob(pattern))
        )

    def running(self) -> list[tuple[str, str]]:
        """(namespace, name) of every pod with a live process."""
        return self._call(
            lambda: sorted(
                (run.namespace, run.name)
                for run in self._runs.values()
                if any(p is not None and p.returncode is None for p in run.procs)
            )
        )

    def _call(self, function: Any, *args: Any) -> Any:
        loop = self._loop
        if loop is None or self._closing:
            raise RuntimeError("the fake kubelet is not running: use it as a context manager")

        async def call() -> Any:
            return function(*args)

        return asyncio.run_coroutine_threadsafe(call(), loop).result(CALL_TIMEOUT_S)

    def _find(self, namespace: str, name: str) -> PodRun:
        for run in self._runs.values():
            if (run.namespace, run.name) == (namespace, name):
                return run
        known = ", ".join(f"{r.namespace}/{r.name}" for r in self._runs.values()) or "(none)"
        raise KeyError(f"pod {namespace}/{name} is not on the fake node; its pods: {known}")

    def _kill(self, namespace: str, name: str) -> None:
        self._find(namespace, name).kill()

    # -- the controller seam (any thread, under the cluster's lock: only hand the change over) ---

    def _observe(self, change: Change, cluster: Cluster) -> None:
        if self._cluster is None:
            self._cluster = cluster
        elif cluster is not self._cluster:
            raise RuntimeError("one Kubelet serves one cluster; make a Kubelet per FakeApiServer")
        loop = self._loop
        if change.resource in (DEPLOYMENTS, PODS) and loop is not None and not self._closing:
            loop.call_soon_threadsafe(self._changed, change)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("fake kubelet task failed", exc_info=task.exception())

    # -- on the loop -----------------------------------------------------------------------------

    def _changed(self, change: Change) -> None:
        if self._closing or self._cluster is None:
            return
        if self._deployments is None:
            self._deployments = DeploymentController(self._cluster)
            self._spawn(self._deployments.run())
        meta = change.object["metadata"]
        namespace = meta.get("namespace") or ""
        if change.resource == DEPLOYMENTS:
            if change.type == "DELETED":
                self._deployments.deleted(namespace, meta["uid"])
            else:
                self._deployments.changed(namespace, meta["name"])
            return
        for ref in meta.get("ownerReferences") or []:
            if ref.get("kind") == "Deployment" and ref.get("controller"):
                self._deployments.changed(namespace, ref["name"])
        self._pod_changed(change)

    def _pod_changed(self, change: Change) -> None:
        pod = change.object
        meta, spec = pod["metadata"], pod.get("spec") or {}
        uid = meta["uid"]
        run = self._runs.get(uid)
        if change.type == "DELETED":
            self._pending.pop(uid, None)
            if run is not None:  # removed without us (grace 0): it dies now
                self._spawn(self._forget(run))
            return
        if spec.get("nodeName") not in (None, "", self.node_name):
            return
        if run is not None:
            grace = float(meta.get("deletionGracePeriodSeconds") or 0)
            if meta.get("deletionTimestamp") and run.mark_terminating(grace):
                self._spawn(self._terminate(run))
            return
        if meta.get("deletionTimestamp"):
            if spec.get("nodeName") == self.node_name:  # bound here but never run: nothing to stop
                self._remove(meta.get("namespace") or "", meta["name"], uid)
            return
        if (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
            return
        if spec.get("nodeName") == self.node_name and uid not in self._pending:
            return  # ours once, finished or gone from our table: nothing restarts
        if sum(1 for r in self._runs.values() if not r.finished) >= self.max_pods:
            if uid not in self._pending:
                self._pending[uid] = (meta.get("namespace") or "", meta["name"])
                why = (
                    f"0/1 nodes are available: 1 Too many pods (the fake kubelet's max_pods={self.max_pods})"
                )
                self._write(meta.get("namespace") or "", meta["name"], uid, PodView(None, None, (), why))
            return
        self._pending.pop(uid, None)
        self._admit(pod)

    def _admit(self, pod: dict[str, Any]) -> None:
        assert self._cluster is not None
        meta = pod["metadata"]
        namespace, name, uid = meta.get("namespace") or "", meta["name"], meta["uid"]
        ip = self._allocate()
        try:
            binding = json.dumps({"spec": {"nodeName": self.node_name}}).encode()
            bound = self._cluster.patch(PODS, namespace, name, "application/merge-patch+json", binding)
        except ApiError as error:
            log.warning("pod %s/%s: cannot bind it: %s", namespace, name, error)
            return
        bound["status"] = {
            **(bound.get("status") or {}),
            "podIP": ip,
            "podIPs": [{"ip": ip}],
            "hostIP": "127.0.0.1",
        }
        bound["status"]["hostIPs"] = [{"ip": "127.0.0.1"}]

        def config_maps(ns: str, cm: str) -> Mapping[str, str] | None:
            found = self._cluster.read(CONFIGMAPS, ns, cm) if self._cluster else None
            return None if found is None else found.get("data") or {}

        try:
            launches = pod_spec.launches(bound, ip, self.base_env, config_maps, self.entrypoints)
        except pod_spec.PodSpecError as error:
            containers = (bound.get("spec") or {}).get("containers") or [{}]
            views = tuple(
                ContainerView(
                    str(c.get("name", "?")),
                    str(c.get("image", "")),
                    reason="CreateContainerConfigError",
                    message=str(error),
                )
                for c in containers
            )
            log.warning("%s", error)
            self._write(namespace, name, uid, PodView(ip, None, views))
            return
        run = PodRun(namespace, name, uid, ip, launches, self.log_dir, self._report)
        self._runs[uid] = run
        self._spawn(self._start(run))

    async def _start(self, run: PodRun) -> None:
        await run.start(self._preexec)
        await run.stopped.wait()
        if not run.terminating:
            run.cancel_probes()
            self._schedule_pending()  # a finished pod frees its slot; it stays until deleted

    async def _terminate(self, run: PodRun) -> None:
        """A graceful delete: stop the containers, write the final status, then remove the pod."""
        await run.terminate()
        if self._closing or self._runs.get(run.uid) is not run:
            return
        run.cancel_probes()
        self._report(run)
        del self._runs[run.uid]
        self._remove(run.namespace, run.name, run.uid)
        self._schedule_pending()

    async def _forget(self, run: PodRun) -> None:
        """The pod was removed outright (grace 0): its processes die now."""
        await run.kill_when_started()
        run.cancel_probes()
        if self._runs.get(run.uid) is run:
            del self._runs[run.uid]
            self._schedule_pending()

    def _remove(self, namespace: str, name: str, uid: str) -> None:
        """The kubelet's last word on a pod: delete it with no grace period left (it goes now)."""
        assert self._cluster is not None
        try:
            self._cluster.delete(PODS, namespace, name, {"uid": uid}, grace_period_seconds=0)
        except ApiError as error:
            if error.code not in (404, 409):
                log.warning("pod %s/%s: cannot remove it: %s", namespace, name, error)

    def _schedule_pending(self) -> None:
        if self._closing or self._cluster is None:
            return
        for uid, (namespace, name) in list(self._pending.items()):
            if sum(1 for r in self._runs.values() if not r.finished) >= self.max_pods:
                return
            pod = self._cluster.read(PODS, namespace, name)
            del self._pending[uid]
            if (
                pod is not None
                and pod["metadata"]["uid"] == uid
                and not pod["metadata"].get("deletionTimestamp")
            ):
                self._admit(pod)

    def _allocate(self) -> str:
        used = {run.ip for run in self._runs.values()}
        for _ in range(_ADDRESSES):
            address = pod_address(self._next_address)
            self._next_address = (self._next_address + 1) % _ADDRESSES
            if address not in used:
                return address
        raise RuntimeError("the fake node has no loopback address left")

    def _report(self, run: PodRun) -> None:
        if not run.closing and not self._closing:
            self._write(run.namespace, run.name, run.uid, run.view())

    def _write(self, namespace: str, name: str, uid: str, view: PodView) -> None:
        assert self._cluster is not None
        current = self._cluster.read(PODS, namespace, name)
        if current is None or current["metadata"]["uid"] != uid:
            return
        status = pod_status(view, current.get("status"), self._cluster.timestamp())
        if status != current.get("status"):
            try:
                self._cluster.write_status(PODS, namespace, name, status)
            except ApiError as error:
                if error.code != 404:
                    raise
