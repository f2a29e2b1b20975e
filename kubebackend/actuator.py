"""The Kubernetes actuator: the autoscaler's decisions become Deployment scales, pods come from a watch.

``KubeActuator`` implements ``autoscaler.actuator.Actuator`` for revisions that are Deployments:

* ``set_desired_scale`` PATCHes the Deployment's ``scale`` subresource — only when the value differs
  from the Deployment's ``spec.replicas`` as last seen, so an idle revision whose decision repeats
  every tick costs no request. It never blocks the loop: the PATCH runs on a worker thread, the
  latest value wins (values asked for while one is in flight coalesce into one more PATCH), and a
  409 or 5xx is retried with backoff. A refusal that will not pass (403, 422) is a Warning Event on
  the Deployment and is not retried for the same value for a while. (A Deployment watch lagging
  behind our own write can show the old replicas for a moment; the next tick then sends the same
  PATCH once more, which the API server answers without a change — one request, not a loop.)
* ``pods`` comes from the pod informer: the pods the Deployment's ``spec.selector`` selects in its
  namespace, as the ReplicaSet controller counts them. A pod is at ``podIP:8012`` (its queue-proxy)
  and scraped at ``http://podIP:9090/stats``; it is ready when its Ready condition is True and it
  has an IP; pods being deleted (``deletionTimestamp``) or finished are left out, as the Actuator
  contract asks. Listeners hear of a revision when its list of pods really changed.

Which revisions exist is the enrollment shell's to say (``track``/``untrack``); this module only
scales and watches what it is told to.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from kubernetes.client import AppsV1Api

from autoscaler.actuator import PodInfo, PodsListener
from autoscaler.stat import RevisionKey
from kubebackend.events import EventRecorder
from kubebackend.informer import DELETED, Change, Informer
from kubebackend.retry import KeyedWork, describe, is_retryable, status_of
from kubebackend.sidecar import QUEUE_PORT, STATS_PORT

log = logging.getLogger("kpa.actuator")

REFUSED_RETRY_S = 60.0  # a scale the API server refused (403, 422) is not asked again sooner


def selects(selector: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    """Whether a LabelSelector (``matchLabels`` and ``matchExpressions``) selects ``labels``.

    An empty selector selects nothing here (a Deployment always has one; an empty one would claim
    every pod of the namespace).
    """
    match = selector.get("matchLabels") or {}
    expressions = selector.get("matchExpressions") or []
    if not match and not expressions:
        return False
    if any(labels.get(key) != value for key, value in match.items()):
        return False
    for expression in expressions:
        key, operator = expression.get("key"), expression.get("operator")
        values = expression.get("values") or []
        present = key in labels
        if not (
            (operator == "In" and present and labels[key] in values)
            or (operator == "NotIn" and (not present or labels[key] not in values))
            or (operator == "Exists" and present)
            or (operator == "DoesNotExist" and not present)
        ):
            return False
    return True


def _seconds(stamp: Any) -> float | None:
    if not isinstance(stamp, str) or not stamp:
        return None
    try:
        return datetime.fromisoformat(stamp).timestamp()
    except ValueError:
        return None


def pod_info(revision: RevisionKey, pod: Mapping[str, Any]) -> PodInfo | None:
    """What the autoscaler knows of ``pod`` (pure); None for a pod being deleted or finished."""
    meta, status = pod.get("metadata") or {}, pod.get("status") or {}
    if meta.get("deletionTimestamp") or status.get("phase") in ("Succeeded", "Failed"):
        return None
    ip = str(status.get("podIP") or "")
    host = f"[{ip}]" if ":" in ip else ip
    ready = bool(ip) and any(
        c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or ()
    )
    started = _seconds(status.get("startTime")) or _seconds(meta.get("creationTimestamp")) or 0.0
    return PodInfo(
        name=str(meta.get("name") or ""),
        revision=revision,
        address=f"{host}:{QUEUE_PORT}" if ip else "",
        stats_url=f"http://{host}:{STATS_PORT}/stats" if ip else "",
        started_at=started,
        ready=ready,
    )


def _labels(obj: Mapping[str, Any]) -> Mapping[str, str]:
    return (obj.get("metadata") or {}).get("labels") or {}


@dataclass
class _Revision:
    ref: RevisionKey
    selector: Mapping[str, Any]
    observed: int | None  # the Deployment's spec.replicas as last seen (informer or our own write)
    desired: int | None = None  # what the autoscaler asked for last
    refused: tuple[int, float] | None = None  # (value, when) the API server refused for good
    pods: dict[str, PodInfo] = field(default_factory=dict)
    listed: tuple[PodInfo, ...] = ()


class KubeActuator:
    """Scales Deployments through their scale subresource and reports their pods; see the module doc."""

    def __init__(
        self,
        apps: AppsV1Api,
        deployments: Informer,
        pods: Informer,
        *,
        executor: Executor | None = None,
        events: EventRecorder | None = None,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._apps = apps
        self._deployments = deployments
        self._pods = pods
        self._executor = executor
        self._events = events
        self._clock = clock
        self._revisions: dict[RevisionKey, _Revision] = {}
        self._by_namespace: dict[str, set[RevisionKey]] = {}
        self._listeners: list[PodsListener] = []
        self._writes: KeyedWork[RevisionKey] = KeyedWork("scale", self._write, rng=rng)
        self._paused = False
        self.scale_writes = 0  # PATCHes sent, for metrics and tests
        deployments.add_handler(self._deployment_changed)
        pods.add_handler(self._pod_changed)

    # ---- which revisions (the enrollment shell's calls) -------------------------------------------

    def track(self, ref: RevisionKey, deployment: Mapping[str, Any]) -> None:
        """Scale ``ref`` through ``deployment`` (its current state, from the informer)."""
        spec = deployment.get("spec") or {}
        selector = spec.get("selector") or {}
        replicas = spec.get("replicas")
        observed = replicas if isinstance(replicas, int) else None
        revision = self._revisions.get(ref)
        if revision is None:
            revision = self._revisions[ref] = _Revision(ref, selector, observed)
            self._by_namespace.setdefault(ref.namespace, set()).add(ref)
        else:
            revision.observed = observed
            if revision.selector == selector:
                return
            revision.selector = selector
        revision.pods = {}
        for pod in self._pods.items(ref.namespace):
            self._place(revision, pod)
        self._tell(revision)

    def untrack(self, ref: RevisionKey) -> None:
        self._writes.forget(ref)
        if self._revisions.pop(ref, None) is not None:
            refs = self._by_namespace.get(ref.namespace, set())
            refs.discard(ref)
            if not refs:
                self._by_namespace.pop(ref.namespace, None)

    def tracked(self) -> list[RevisionKey]:
        return sorted(self._revisions)

    # ---- the Actuator interface -------------------------------------------------------------------

    def set_desired_scale(self, revision: RevisionKey, desired: int) -> None:
        state = self._revisions.get(revision)
        if state is None or self._paused:
            return
        state.desired = max(0, desired)
        if state.desired != state.observed:
            self._writes.add(revision)

    def desired_scale(self, revision: RevisionKey) -> int:
        state = self._revisions.get(revision)
        if state is None:
            return 0
        return state.desired if state.desired is not None else state.observed or 0

    def pods(self, revision: RevisionKey) -> Sequence[PodInfo]:
        state = self._revisions.get(revision)
        return state.listed if state is not None else ()

    def subscribe(self, listener: PodsListener) -> None:
        self._listeners.append(listener)

    async def close(self) -> None:
        await self._writes.close()

    def pause(self) -> None:
        """Write nothing from now on (this replica stopped leading): pending scale writes are
        dropped and what the autoscaler asked forgotten. The pods are still followed."""
        self._paused = True
        self._writes.cancel_all()
        for state in self._revisions.values():
            state.desired = None

    def resume(self) -> None:
        self._paused = False

    # ---- writing the scale ------------------------------------------------------------------------

    async def _write(self, ref: RevisionKey) -> None:
        state = self._revisions.get(ref)
        if state is None or state.desired is None or state.desired == state.observed:
            return
        want = state.desired
        refused = state.refused
        if refused is not None and refused[0] == want and self._clock() - refused[1] < REFUSED_RETRY_S:
            return
        body = {"spec": {"replicas": want}}
        call = self._apps.patch_namespaced_deployment_scale
        self.scale_writes += 1
        try:
            await asyncio.get_running_loop().run_in_executor(
                self._executor, lambda: call(ref.name, ref.namespace, body)
            )
        except Exception as error:
            if is_retryable(error):
                raise  # KeyedWork backs off and tries again with the latest value
            state.refused = (want, self._clock())
            if status_of(error) == 404:
                log.info("%s: Deployment gone, not scaled to %d", ref, want)
                return
            log.warning("%s: scale to %d refused: %s", ref, want, describe(error))
            deployment = self._deployments.get(ref.namespace, ref.name)
            if self._events is not None and deployment is not None:
                self._events.warning(deployment, "ScaleFailed", f"scale to {want} refused: {describe(error)}")
            return
        log.info("%s: scaled %s -> %d", ref, state.observed, want)
        if ref in self._revisions:
            state.observed = want
            state.refused = None

    # ---- the informers' changes --------------------------------------------------------------------

    def _deployment_changed(self, change: Change) -> None:
        meta = change.object.get("metadata") or {}
        ref = RevisionKey(str(meta.get("namespace") or ""), str(meta.get("name") or ""))
        state = self._revisions.get(ref)
        if state is None or change.type == DELETED:
            return
        replicas = (change.object.get("spec") or {}).get("replicas")
        state.observed = replicas if isinstance(replicas, int) else state.observed
        selector = (change.object.get("spec") or {}).get("selector") or {}
        if selector != state.selector:
            self.track(ref, change.object)

    def _pod_changed(self, change: Change) -> None:
        meta = change.object.get("metadata") or {}
        for ref in self._by_namespace.get(str(meta.get("namespace") or ""), ()):
            state = self._revisions[ref]
            if change.type == DELETED:
                removed = state.pods.pop(str(meta.get("name") or ""), None)
                if removed is not None:
                    self._tell(state)
            elif self._place(state, change.object):
                self._tell(state)

    def _place(self, state: _Revision, pod: Mapping[str, Any]) -> bool:
        """Put ``pod`` in or out of ``state``'s pods; whether that changed them."""
        name = str((pod.get("metadata") or {}).get("name") or "")
        info = pod_info(state.ref, pod) if selects(state.selector, _labels(pod)) else None
        if info is None:
            return state.pods.pop(name, None) is not None
        if state.pods.get(name) == info:
            return False
        state.pods[name] = info
        return True

    def _tell(self, state: _Revision) -> None:
        listed = tuple(sorted(state.pods.values(), key=lambda p: p.name))
        if listed == state.listed:
            return
        state.listed = listed
        for listener in self._listeners:
            try:
                listener(state.ref, listed)
            except Exception:
                log.exception("%s: pods listener failed", state.ref)
