"""The traffic flip: each revision's selector-less Service and the one EndpointSlice behind it.

Knative's ServerlessService, without Knative (docs/kubernetes.md, "Objects"): clients call
``http://<revision>-kpa.<namespace>``, a Service with no selector, and the controller alone writes
its EndpointSlice ``<revision>-kpa`` — the activators in **proxy** mode (at zero, or when the burst
capacity is short), the ready pods' queue-proxies in **serve** mode. What the slice holds is the
pure ``kubebackend.endpoints``'s to say (the SKS overrides, the activator subset); this module
watches what it depends on and writes when, and only when, the stored slice differs:

* the autoscaler service's mode flips (``AutoscalerService.on_mode_change``, also once per revision
  when it starts being scaled: that creates the Service and a slice pointing at the activators);
* the revision's pods change (the actuator's listeners): serve mode lists the ready ones;
* the activators change (the ``kpa-activator`` Service's EndpointSlices, watched);
* someone else edits or deletes our Service or slice (both watched): it is put back;
* the revision's container concurrency or timeout change: the Service carries them as annotations
  (``kpa-emulator.dev/container-concurrency``, ``kpa-emulator.dev/timeout-seconds``), so an
  activator holding requests for a revision at zero, with no pod to read them from, knows them.

Writes go through ``kubebackend.retry.KeyedWork`` — one reconcile per revision at a time, changes
that arrive meanwhile coalesce into one more, failures back off — so a burst of pod changes costs
one or two writes, and an idle revision costs none. The Service is owned by the Deployment and the
slice by the Service (``ownerReferences``), so a cluster's garbage collector cleans up after a
controller that is not running; when a revision stops being scaled the controller deletes both
itself. A flip is a Normal Event on the Deployment. A Service of the same name that is not ours is
never touched: a Warning Event says so and the revision keeps no public address until it is renamed.

Only the leader writes: :meth:`Flipper.pause` (the replica stopped leading) drops every pending write
and what it knew of the objects at once, and :meth:`Flipper.resume` starts afresh from the caches.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Executor
from typing import Any

from kubernetes.client import CoreV1Api, DiscoveryV1Api, V1DeleteOptions, V1Preconditions

from autoscaler.actuator import PodInfo, ready_pods
from autoscaler.lifecycle import SERVE
from autoscaler.service import AutoscalerService
from autoscaler.stat import RevisionKey
from kubebackend.actuator import KubeActuator
from kubebackend.endpoints import (
    MODE_ANNOTATION,
    REVISION_LABEL,
    Endpoint,
    activator_subset,
    activators_needed,
    effective_mode,
    endpoint_slice,
    revision_service,
    service_name,
    slice_differs,
    slice_name,
)
from kubebackend.enrollment import CONTAINER_CONCURRENCY_ANNOTATION, TIMEOUT_ANNOTATION
from kubebackend.events import EventRecorder
from kubebackend.informer import DELETED, Change, Informer, resource_version
from kubebackend.retry import KeyedWork, status_of

log = logging.getLogger("kpa.controller")

# (container concurrency, timeout seconds) of a scaled revision; None while it is not known.
ServingSettings = Callable[[RevisionKey], tuple[int, int] | None]


def ready_endpoints(slices: Sequence[Mapping[str, Any]]) -> list[Endpoint]:
    """The ready addresses of a Service's EndpointSlices (``ready`` absent means ready), one per IP."""
    found: dict[str, Endpoint] = {}
    for body in slices:
        for endpoint in body.get("endpoints") or ():
            if (endpoint.get("conditions") or {}).get("ready") is False:
                continue
            pod = str((endpoint.get("targetRef") or {}).get("name") or "")
            for ip in endpoint.get("addresses") or ():
                found.setdefault(str(ip), Endpoint(str(ip), pod))
    return sorted(found.values(), key=lambda e: e.ip)


def pod_endpoints(pods: Sequence[PodInfo]) -> list[Endpoint]:
    """The ready pods as slice endpoints (the IP out of the queue-proxy address ``ip:8012``)."""
    return [Endpoint(p.address.rsplit(":", 1)[0].strip("[]"), p.name) for p in ready_pods(pods)]


def _ref_of(obj: Mapping[str, Any]) -> RevisionKey:
    meta = obj.get("metadata") or {}
    return RevisionKey(
        str(meta.get("namespace") or ""), str((meta.get("labels") or {}).get(REVISION_LABEL) or "")
    )


def _our_annotations(obj: Mapping[str, Any] | None) -> dict[str, str]:
    found = ((obj or {}).get("metadata") or {}).get("annotations") or {}
    keys = (CONTAINER_CONCURRENCY_ANNOTATION, TIMEOUT_ANNOTATION)
    return {key: str(found[key]) for key in keys if key in found}


def _mode_of(body: Mapping[str, Any] | None) -> str | None:
    if body is None:
        return None
    return ((body.get("metadata") or {}).get("annotations") or {}).get(MODE_ANNOTATION)


class Flipper:
    """Keeps every scaled revision's Service and EndpointSlice as the mode says; see the module doc."""

    def __init__(
        self,
        core: CoreV1Api,
        discovery: DiscoveryV1Api,
        service: AutoscalerService,
        actuator: KubeActuator,
        deployments: Informer,
        services: Informer,
        slices: Informer,
        activator_slices: Informer,
        *,
        executor: Executor | None = None,
        events: EventRecorder | None = None,
        rng: random.Random | None = None,
        serving_settings: ServingSettings | None = None,
    ) -> None:
        self._core = core
        self._discovery = discovery
        self._service = service
        self._actuator = actuator
        self._deployments = deployments
        self._services = services
        self._slices = slices
        self._activator_slices = activator_slices
        self._executor = executor
        self._events = events
        self._serving_settings = serving_settings
        self._paused = False
        self._wanted: dict[RevisionKey, str] = {}  # the autoscaler's mode per scaled revision
        self._service_uids: dict[RevisionKey, str] = {}  # Services we made or found ours
        self._annotated: dict[RevisionKey, dict[str, str]] = {}  # our annotations, as last written/seen
        # The slice as we last wrote it, and the resourceVersions our writes made: the watch echoes
        # our own writes later, and another informer's event may come first (see _slice_changed).
        self._written: dict[RevisionKey, dict[str, Any]] = {}
        self._our_versions: dict[RevisionKey, deque[str]] = {}
        self._work: KeyedWork[RevisionKey] = KeyedWork("flip", self._reconcile, rng=rng)
        self._removals: KeyedWork[RevisionKey] = KeyedWork("unflip", self._delete, rng=rng)
        self.writes = 0  # Service and EndpointSlice writes, for metrics and tests
        service.on_mode_change(self._mode_changed)
        actuator.subscribe(self._pods_changed)
        activator_slices.add_handler(self._activators_changed)
        slices.add_handler(self._slice_changed)
        services.add_handler(self._service_changed)

    def remove(self, ref: RevisionKey) -> None:
        """``ref`` is no longer scaled: delete its Service and slice (the enrollment shell calls this)."""
        if self._paused:
            return
        self._wanted.pop(ref, None)
        self._work.forget(ref)
        self._removals.add(ref)

    def modes(self) -> dict[RevisionKey, str]:
        """The mode each revision's slice is written in (as we wrote it, else as last seen)."""
        return {ref: _mode_of(self._stored(ref)) or "" for ref in self._wanted}

    def _stored(self, ref: RevisionKey) -> Mapping[str, Any] | None:
        """The revision's slice as it is on the server, as far as we know: what we last wrote unless
        a change since has come from someone else, else the informer's copy."""
        return self._written.get(ref) or self._slices.get(ref.namespace, slice_name(ref.name))

    def settings_changed(self, ref: RevisionKey) -> None:
        """The revision's container concurrency or timeout may have changed: annotate its Service."""
        if ref in self._wanted:
            self._work.add(ref)

    def pause(self) -> None:
        """Write nothing from now on (this replica stopped leading): pending writes are dropped, and
        what we knew of our objects forgotten, so :meth:`resume` starts from the caches afresh."""
        self._paused = True
        self._work.cancel_all()
        self._removals.cancel_all()
        for known in (self._wanted, self._service_uids, self._annotated, self._written, self._our_versions):
            known.clear()

    def resume(self) -> None:
        """Write again; the autoscaler announces every revision's mode when it starts."""
        self._paused = False

    async def close(self) -> None:
        await self._work.close()
        await self._removals.close()

    # ---- what triggers a reconcile ------------------------------------------------------------------

    def _mode_changed(self, ref: RevisionKey, mode: str) -> None:
        if self._paused:
            return
        self._wanted[ref] = mode
        self._removals.forget(ref)
        self._work.add(ref)

    def _pods_changed(self, ref: RevisionKey, pods: Sequence[PodInfo]) -> None:
        if ref in self._wanted:
            self._work.add(ref)

    def _activators_changed(self, change: Change) -> None:
        for ref in self._wanted:
            self._work.add(ref)

    def _slice_changed(self, change: Change) -> None:
        """Someone else's edit or deletion of our slice is put back; our own writes' echoes are not
        news. (The echo matters: right after a burst of writes the slice watch lags the Service
        watch, and a reconcile that trusted the lagging cache would create slices that exist.)"""
        ref = _ref_of(change.object)
        if change.type != DELETED and resource_version(change.object) in self._our_versions.get(ref, ()):
            return
        self._written.pop(ref, None)
        if ref in self._wanted:
            self._work.add(ref)

    def _service_changed(self, change: Change) -> None:
        """A deleted Service is made again, and annotations someone else changed are put back; our
        own writes' echoes are not news."""
        ref = _ref_of(change.object)
        if change.type == DELETED:
            self._service_uids.pop(ref, None)
            self._annotated.pop(ref, None)
        elif ref in self._annotated and _our_annotations(change.object) != self._annotated[ref]:
            self._annotated.pop(ref, None)
        else:
            return
        if ref in self._wanted:
            self._work.add(ref)

    # ---- writing ------------------------------------------------------------------------------------

    async def _call(self, method: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        self.writes += 1
        return await asyncio.get_running_loop().run_in_executor(
            self._executor, lambda: method(*args, **kwargs)
        )

    async def _reconcile(self, ref: RevisionKey) -> None:
        wanted = self._wanted.get(ref)
        deployment = self._deployments.get(ref.namespace, ref.name)
        if wanted is None or deployment is None:
            return
        uid = await self._ensure_service(ref, deployment)
        if uid is None or ref not in self._wanted:
            return  # the name is taken, or the revision went while the Service was being made
        await self._annotate(ref)
        settings = self._service.settings(ref).spec
        ready = pod_endpoints(self._actuator.pods(ref))
        activators = ready_endpoints(self._activator_slices.items())
        mode = effective_mode(wanted, len(ready), len(activators))
        if mode == SERVE:
            chosen = ready
        else:
            count = activators_needed(
                len(ready), settings.total_value, settings.target_burst_capacity, settings.activator_capacity
            )
            chosen = activator_subset(ref.name, activators, count)
        body = endpoint_slice(
            ref.namespace, ref.name, mode, chosen, owner={"name": service_name(ref.name), "uid": uid}
        )
        stored = self._stored(ref)
        if not slice_differs(stored, body):
            return
        await self._write_slice(ref, body, stored)
        before = _mode_of(stored)
        if before is not None and before != mode and self._events is not None:
            where = f"{len(chosen)} ready pod(s)" if mode == SERVE else f"{len(chosen)} activator(s)"
            note = f"traffic to {service_name(ref.name)}.{ref.namespace} now goes to {where} ({mode} mode)"
            self._events.normal(deployment, "ServeMode" if mode == SERVE else "ProxyMode", note)
        else:
            log.info("%s: EndpointSlice written, %s mode, %d endpoint(s)", ref, mode, len(chosen))

    def _annotations(self, ref: RevisionKey) -> dict[str, str]:
        """What the revision's Service should say of its container concurrency and timeout."""
        found = self._serving_settings(ref) if self._serving_settings is not None else None
        if found is None:
            return {}
        concurrency, timeout = found
        return {CONTAINER_CONCURRENCY_ANNOTATION: str(concurrency), TIMEOUT_ANNOTATION: str(timeout)}

    async def _annotate(self, ref: RevisionKey) -> None:
        wanted = self._annotations(ref)
        known = self._annotated.get(ref)
        if known is None:
            known = _our_annotations(self._services.get(ref.namespace, service_name(ref.name)))
        if not wanted or known == wanted:
            self._annotated[ref] = known
            return
        body = {"metadata": {"annotations": wanted}}
        await self._call(self._core.patch_namespaced_service, service_name(ref.name), ref.namespace, body)
        self._annotated[ref] = wanted
        log.info("%s: Service annotated %s", ref, wanted)

    async def _ensure_service(self, ref: RevisionKey, deployment: Mapping[str, Any]) -> str | None:
        """The uid of the revision's Service, made if missing; None when the name is taken by another."""
        if ref in self._service_uids:
            return self._service_uids[ref]
        name = service_name(ref.name)
        stored = self._services.get(ref.namespace, name)
        if stored is not None:
            uid = str(stored["metadata"].get("uid") or "")
            self._service_uids[ref] = uid
            return uid
        body = revision_service(ref.namespace, ref.name)
        annotations = self._annotations(ref)
        if annotations:
            body["metadata"]["annotations"] = annotations
        meta = deployment.get("metadata") or {}
        body["metadata"]["ownerReferences"] = [
            {"apiVersion": "apps/v1", "kind": "Deployment", "name": ref.name, "uid": meta.get("uid")}
        ]
        try:
            made = await self._call(self._core.create_namespaced_service, ref.namespace, body)
            uid = str(made.metadata.uid)
            self._annotated[ref] = annotations
        except Exception as error:
            if status_of(error) != 409:
                raise
            found = await self._call(self._core.read_namespaced_service, name, ref.namespace)
            labels = found.metadata.labels or {}
            if labels.get(REVISION_LABEL) != ref.name:
                if self._events is not None:
                    self._events.warning(
                        deployment,
                        "ServiceNameTaken",
                        f"a Service {ref.namespace}/{name} exists and was not made by kpa-controller; "
                        f"the revision gets no public Service until that one is renamed or deleted",
                    )
                return None
            uid = str(found.metadata.uid)
        self._service_uids[ref] = uid
        log.info("%s: Service made", ref)
        return uid

    async def _write_slice(
        self, ref: RevisionKey, body: dict[str, Any], stored: Mapping[str, Any] | None
    ) -> None:
        name = slice_name(ref.name)
        written = None
        if stored is None:
            try:
                written = await self._call(
                    self._discovery.create_namespaced_endpoint_slice, ref.namespace, body
                )
            except Exception as error:
                if status_of(error) != 409:
                    raise  # retried by KeyedWork (a 4xx other than 409 is a bug in the body: logged each try)
        if written is None:
            written = await self._call(
                self._discovery.patch_namespaced_endpoint_slice, name, ref.namespace, body
            )
        self._written[ref] = body
        self._our_versions.setdefault(ref, deque(maxlen=8)).append(str(written.metadata.resource_version))

    async def _delete(self, ref: RevisionKey) -> None:
        if ref in self._wanted:
            return  # scaled again meanwhile
        try:
            await self._call(
                self._discovery.delete_namespaced_endpoint_slice, slice_name(ref.name), ref.namespace
            )
        except Exception as error:
            if status_of(error) != 404:
                raise
        stored = self._services.get(ref.namespace, service_name(ref.name))
        uid = self._service_uids.get(ref) or (stored["metadata"].get("uid") if stored else None)
        if uid:  # only a Service known to be ours, and only that very one (uid precondition)
            options = V1DeleteOptions(preconditions=V1Preconditions(uid=uid))
            try:
                await self._call(
                    self._core.delete_namespaced_service, service_name(ref.name), ref.namespace, body=options
                )
            except Exception as error:
                if status_of(error) not in (404, 409):  # 409: the uid differs, not ours any more
                    raise
        self._service_uids.pop(ref, None)
        self._annotated.pop(ref, None)
        self._written.pop(ref, None)
        self._our_versions.pop(ref, None)
        log.info("%s: no longer scaled; its Service and EndpointSlice are deleted", ref)
