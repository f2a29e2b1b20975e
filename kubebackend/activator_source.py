"""The activator's Kubernetes endpoints source: it watches the cluster (never polls) and keeps the
activator's revision table current (``kpa activator --kubernetes``).

Three informers (``kubebackend.informer``: list, then watch; re-list on drops and 410; backoff on
failures), each narrowed by a label selector so the activator caches only what it uses:

* the revisions' pods, in every namespace (``kpa-emulator.dev/revision``);
* the controller's revision Services, in every namespace (the same label): a revision at zero;
* the ``kpa-activator`` Service's EndpointSlices in ``kpa-system``: this replica's slot.

Every change marks the revisions it touches; once per loop turn the marked revisions are read
from the caches through the pure ``kubebackend.activator_view`` and the table is told only what
differs — ``set_revision`` for a new revision or new settings, ``set_endpoints`` for a new set of
ready pods, ``remove_revision`` when the revision's Service and pods are all gone — and
``set_activator_slot`` when the ready activators change. The table probes new pods itself before
sending them requests. Reads only: pods, services and endpointslices, get/list/watch
(``kubebackend.rbac.ACTIVATOR_CALLS``).
"""

from __future__ import annotations

import asyncio
import functools
import logging
from typing import Any, Protocol

from kubernetes import client

from activator.config import ActivatorConfigError, RevisionConfig
from autoscaler.stat import RevisionKey
from kubebackend.activator_view import activator_slot, revision_of, revision_state
from kubebackend.endpoints import SERVICE_NAME_LABEL
from kubebackend.informer import Change, Informer
from kubebackend.rbac import ACTIVATOR, SYSTEM_NAMESPACE
from kubebackend.sidecar import REVISION_LABEL

log = logging.getLogger("kpa.activator.kubernetes")

SYNC_TIMEOUT_S = 30.0  # start() waits this long for the first lists before serving on what it has


class RevisionTableApi(Protocol):
    """What the source drives: the activator's control API (``activator.revisions.RevisionTable``)."""

    def set_revision(self, config: RevisionConfig) -> None: ...
    def set_endpoints(self, key: RevisionKey, addresses: list[str]) -> None: ...
    def remove_revision(self, key: RevisionKey) -> None: ...
    def set_activator_slot(self, index: int, count: int) -> None: ...
    @property
    def activator_slot(self) -> tuple[int, int]: ...


class ActivatorSource:
    """Keeps ``table`` in step with the cluster; ``start`` on the table's event loop, ``close`` to stop.

    ``pod_ip`` (the downward API's ``status.podIP``) or ``pod_name`` finds this replica among the
    activator Service's endpoints.
    """

    def __init__(
        self,
        table: RevisionTableApi,
        api_client: client.ApiClient,
        *,
        pod_ip: str | None = None,
        pod_name: str | None = None,
        system_namespace: str = SYSTEM_NAMESPACE,
        activator_service: str = ACTIVATOR,
        watch_timeout_s: float = 300.0,
    ) -> None:
        self.table = table
        self.pod_ip, self.pod_name = pod_ip, pod_name
        core, discovery = client.CoreV1Api(api_client), client.DiscoveryV1Api(api_client)

        def informer(kind: str, call: Any, label: str) -> Informer:
            return Informer(kind, call, label_selector=label, watch_timeout_s=watch_timeout_s)

        self.pods = informer("Pod", core.list_pod_for_all_namespaces, REVISION_LABEL)
        self.services = informer("Service", core.list_service_for_all_namespaces, REVISION_LABEL)
        self.activators = informer(
            "EndpointSlice",
            functools.partial(discovery.list_namespaced_endpoint_slice, system_namespace),
            f"{SERVICE_NAME_LABEL}={activator_service}",
        )
        self.applied: dict[RevisionKey, tuple[RevisionConfig, tuple[str, ...]]] = {}
        self._dirty: set[RevisionKey] = set()
        self._slot_dirty = False
        self._flush_handle: asyncio.Handle | None = None
        self._refused: set[RevisionKey] = set()  # names the table cannot take, warned about once

    async def start(self, sync_timeout_s: float = SYNC_TIMEOUT_S) -> None:
        """Start watching; returns once the first lists are applied (or ``sync_timeout_s`` passed)."""
        self.pods.add_handler(self._on_revision_object)
        self.services.add_handler(self._on_revision_object)
        self.activators.add_handler(self._on_activators)
        informers = (self.pods, self.services, self.activators)
        for informer in informers:
            informer.start()
        try:
            async with asyncio.timeout(sync_timeout_s):
                await asyncio.gather(*(i.wait_synced() for i in informers))
        except TimeoutError:
            waiting = [i.kind for i in informers if not i.synced]
            log.warning("no first list of %s within %g s; serving on what is known", waiting, sync_timeout_s)
        self._slot_dirty = True
        self._flush()

    async def close(self) -> None:
        if self._flush_handle is not None:
            self._flush_handle.cancel()
        await asyncio.gather(self.pods.close(), self.services.close(), self.activators.close())

    # -- on the loop -----------------------------------------------------------------------------

    def _on_revision_object(self, change: Change) -> None:
        namespace = str((change.object.get("metadata") or {}).get("namespace") or "")
        for obj in (change.object, change.old):
            name = revision_of(obj) if obj is not None else None
            if name:
                self._dirty.add(RevisionKey(namespace, name))
        self._schedule()

    def _on_activators(self, change: Change) -> None:
        self._slot_dirty = True
        self._schedule()

    def _schedule(self) -> None:
        if self._flush_handle is None:
            self._flush_handle = asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        """Apply every marked revision and the slot: what changed in this loop turn, at once."""
        self._flush_handle = None
        dirty, self._dirty = self._dirty, set()
        for key in sorted(dirty, key=str):
            self._apply(key)
        if self._slot_dirty:
            self._slot_dirty = False
            slot = activator_slot(self.activators.items(), self.pod_ip, self.pod_name)
            if slot != tuple(self.table.activator_slot):
                log.info("activator slot %d of %d (was %s)", *slot, self.table.activator_slot)
                self.table.set_activator_slot(*slot)

    def _apply(self, key: RevisionKey) -> None:
        pods = [pod for pod in self.pods.items(key.namespace) if revision_of(pod) == key.name]
        service = next((s for s in self.services.items(key.namespace) if revision_of(s) == key.name), None)
        try:
            state = revision_state(key, pods, service)
        except ActivatorConfigError as error:
            if key not in self._refused:
                self._refused.add(key)
                log.warning("revision %s cannot be fronted: %s", key, error)
            return
        self._refused.discard(key)
        before = self.applied.get(key)
        if state is None:
            if before is not None:
                del self.applied[key]
                self.table.remove_revision(key)
                log.info("revision %s is gone", key)
            return
        for problem in state.problems:
            log.warning("revision %s: %s", key, problem)
        if before is None or before[0] != state.config:
            self.table.set_revision(state.config)
            log.info(
                "revision %s: cc=%d timeout=%gs (from %s)",
                key, state.config.container_concurrency, state.config.timeout_seconds, state.settings_from,
            )  # fmt: skip
        if before is None or before[1] != state.endpoints:
            self.table.set_endpoints(key, list(state.endpoints))
            log.info("revision %s: %d ready pod(s) %s", key, len(state.endpoints), list(state.endpoints))
        self.applied[key] = (state.config, state.endpoints)
