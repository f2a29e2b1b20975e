"""Which revisions the controller scales, kept current from watches: the enrollment shell.

Three informers feed it — Deployments, InferenceServices and the ``config-autoscaler`` ConfigMap —
and it tells the actuator (``track``/``untrack``) and the autoscaler service
(``add_revision``/``remove_revision``) what changed. Which object enrols which revision, and with
which settings, is the pure ``kubebackend.enrollment``'s and ``autoscaler.revision.settings_from``'s
to say; this module only applies their answers:

* a revision is a Deployment: ``RevisionKey(namespace, deployment name)``. A plain Deployment
  enrols itself (Knative's class annotation); a KServe predictor Deployment (labels
  ``serving.kserve.io/inferenceservice=<isvc>``, ``component=predictor``) is enrolled by its
  InferenceService when that asks for ``autoscalerClass: external`` — found by label, never by name;
* a ConfigMap edit re-resolves every revision's settings at once, without a restart. A bad key or
  value is a Warning Event on the ConfigMap and the last good configuration stays (a typo must not
  reset every revision to the defaults); a ConfigMap that is deleted means Knative's defaults;
* a bad enrollment (a malformed annotation, a KServe field the KPA cannot honour) is a Warning Event
  on the object that carries it. A revision not yet scaled is not scaled; one already scaled keeps
  its last good settings (dropping it would leave its traffic and its scale with no owner). The
  controller carries on either way.

Nothing happens before ``start``: the controller calls it once every informer has listed (so a
first pass sees the whole cluster, not a half-listed one) and it is the leader; after ``stop`` (it
stopped leading) changes are ignored until the next ``start``, which goes over everything again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from autoscaler.config import AutoscalerConfig, AutoscalerConfigError, parse_config
from autoscaler.revision import RevisionSettings, settings_from
from autoscaler.service import AutoscalerService
from autoscaler.stat import RevisionKey
from kubebackend.actuator import KubeActuator, selects
from kubebackend.enrollment import (
    KSERVE_COMPONENT_LABEL,
    KSERVE_ISVC_LABEL,
    Enrollment,
    EnrollmentError,
    enrollment_of_deployment,
    enrollment_of_inference_service,
    is_enrolled_deployment,
    is_enrolled_inference_service,
)
from kubebackend.events import EventRecorder
from kubebackend.informer import DELETED, Change, Informer

log = logging.getLogger("kpa.controller")

RemovedListener = Callable[[RevisionKey], None]
ChangedListener = Callable[[RevisionKey], None]


@dataclass(frozen=True, slots=True)
class Enrolled:
    """A revision the controller scales: how it was enrolled and the settings it is scaled with."""

    ref: RevisionKey
    enrollment: Enrollment
    settings: RevisionSettings


def _meta(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    return obj.get("metadata") or {}


def _name(obj: Mapping[str, Any]) -> tuple[str, str]:
    meta = _meta(obj)
    return str(meta.get("namespace") or ""), str(meta.get("name") or "")


def _where(obj: Mapping[str, Any]) -> str:
    return f"{obj.get('kind', 'object')} {'/'.join(_name(obj))}"


class Enrollments:
    """Keeps the scaled revisions in step with the cluster's objects; see the module docstring."""

    def __init__(
        self,
        service: AutoscalerService,
        actuator: KubeActuator,
        deployments: Informer,
        inference_services: Informer,
        config_maps: Informer,
        *,
        config_name: str,
        events: EventRecorder | None = None,
    ) -> None:
        self._service = service
        self._actuator = actuator
        self._deployments = deployments
        self._isvcs = inference_services
        self._config_maps = config_maps
        self._config_name = config_name
        self._events = events
        self._config = AutoscalerConfig()
        self._config_data: dict[str, str] | None = None
        self.config_error: str | None = None  # why the ConfigMap's current content is not in use
        self._enrolled: dict[RevisionKey, Enrolled] = {}
        self._refused: dict[RevisionKey, str] = {}  # revisions not scaled as asked, and why
        self._removed_listeners: list[RemovedListener] = []
        self._changed_listeners: list[ChangedListener] = []
        self._started = False
        deployments.add_handler(self._deployment_changed)
        inference_services.add_handler(self._isvc_changed)
        config_maps.add_handler(self._config_changed)

    def on_removed(self, listener: RemovedListener) -> None:
        """``listener(ref)`` after a revision stops being scaled (its workload went or left)."""
        self._removed_listeners.append(listener)

    def on_serving_changed(self, listener: ChangedListener) -> None:
        """``listener(ref)`` after a revision's container concurrency or timeout changed."""
        self._changed_listeners.append(listener)

    def serving_settings(self, ref: RevisionKey) -> tuple[int, int] | None:
        """(container concurrency, timeout seconds) of an enrolled revision; None if not enrolled."""
        enrolled = self._enrolled.get(ref)
        if enrolled is None:
            return None
        return enrolled.enrollment.container_concurrency, enrolled.enrollment.timeout_seconds

    def stop(self) -> None:
        """Follow no change until the next :meth:`start` (the replica stopped leading)."""
        self._started = False

    def start(self) -> None:
        """Read the configuration and enrol every revision in the (synced) caches; then follow changes."""
        self._started = True
        config = next((c for c in self._config_maps.items() if _name(c)[1] == self._config_name), None)
        if config is not None:
            self._use_config(config)
        self._resync()

    # ---- views --------------------------------------------------------------------------------------

    def enrolled(self) -> dict[RevisionKey, Enrolled]:
        return dict(self._enrolled)

    def refused(self) -> dict[RevisionKey, str]:
        return dict(self._refused)

    @property
    def config(self) -> AutoscalerConfig:
        return self._config

    def revision_of_pod(
        self, namespace: str, labels: Mapping[str, str]
    ) -> tuple[RevisionKey, Enrollment] | None:
        """The enrolled revision whose Deployment selects a pod with ``labels``, and its enrollment.

        The sidecar webhook's question. Read from the caches, not from what is scaled, so a standby
        replica (which scales nothing) answers it as the leader would; a workload whose enrollment
        is refused gets no sidecar (its Warning Event says why).
        """
        for deployment in self._deployments.items(namespace):
            if not selects((deployment.get("spec") or {}).get("selector") or {}, labels):
                continue
            source = self._source(deployment)
            if source is None:
                continue
            try:
                if source is deployment:
                    enrollment = enrollment_of_deployment(source)
                else:
                    enrollment = enrollment_of_inference_service(source)
            except EnrollmentError:
                return None
            return RevisionKey(*_name(deployment)), enrollment
        return None

    # ---- the informers' changes ---------------------------------------------------------------------

    def _deployment_changed(self, change: Change) -> None:
        if not self._started:
            return
        if change.type == DELETED:
            self._drop(RevisionKey(*_name(change.object)))
        else:
            self._reconcile(change.object)

    def _isvc_changed(self, change: Change) -> None:
        if not self._started:
            return
        namespace, name = _name(change.object)
        for deployment in self._deployments.items(namespace):
            labels = _meta(deployment).get("labels") or {}
            if labels.get(KSERVE_ISVC_LABEL) == name:
                self._reconcile(deployment)

    def _config_changed(self, change: Change) -> None:
        if not self._started or _name(change.object)[1] != self._config_name:
            return
        if change.type == DELETED:
            log.info("ConfigMap %s deleted: Knative's defaults apply", "/".join(_name(change.object)))
            self._config, self._config_data, self.config_error = AutoscalerConfig(), None, None
            self._resync()
        elif self._use_config(change.object):
            self._resync()

    # ---- applying -----------------------------------------------------------------------------------

    def _use_config(self, config_map: Mapping[str, Any]) -> bool:
        """Parse the ConfigMap; whether its content became the configuration in use."""
        raw = config_map.get("data") or {}
        data = {str(k): str(v) for k, v in raw.items()}
        if data == self._config_data:
            return False
        try:
            parsed = parse_config(data, strict=True)
        except AutoscalerConfigError as error:
            self.config_error = str(error)
            if self._events is not None:
                self._events.warning(
                    config_map, "InvalidConfig", f"{error}; the last good configuration stays in use"
                )
            return False
        self._config, self._config_data, self.config_error = parsed, data, None
        log.info("%s: configuration in use: %s", _where(config_map), data or "Knative's defaults")
        return True

    def _resync(self) -> None:
        """Everything again: after the first list and after a configuration change."""
        seen = set()
        for deployment in self._deployments.items():
            seen.add(RevisionKey(*_name(deployment)))
            self._reconcile(deployment)
        for ref in [r for r in self._enrolled if r not in seen]:
            self._drop(ref)

    def _source(self, deployment: Mapping[str, Any]) -> Mapping[str, Any] | None:
        """The object that enrols ``deployment`` (itself or its InferenceService), if any."""
        if is_enrolled_deployment(deployment):
            return deployment
        labels = _meta(deployment).get("labels") or {}
        isvc_name = labels.get(KSERVE_ISVC_LABEL)
        if not isvc_name or labels.get(KSERVE_COMPONENT_LABEL) != "predictor":
            return None
        isvc = self._isvcs.get(_name(deployment)[0], str(isvc_name))
        return isvc if isvc is not None and is_enrolled_inference_service(isvc) else None

    def _reconcile(self, deployment: Mapping[str, Any]) -> None:
        ref = RevisionKey(*_name(deployment))
        source = self._source(deployment)
        if source is None:
            self._drop(ref)
            return
        try:
            if source is deployment:
                enrollment = enrollment_of_deployment(source)
            else:
                enrollment = enrollment_of_inference_service(source)
            settings = settings_from(enrollment.annotations, self._config, enrollment.container_concurrency)
        except (EnrollmentError, AutoscalerConfigError) as error:
            self._refuse(ref, source, str(error))
            return
        self._enrol(Enrolled(ref, enrollment, settings), deployment, source)

    def _enrol(self, enrolled: Enrolled, deployment: Mapping[str, Any], source: Mapping[str, Any]) -> None:
        ref = enrolled.ref
        self._refused.pop(ref, None)
        before = self._enrolled.get(ref)
        self._enrolled[ref] = enrolled
        serving = (enrolled.enrollment.container_concurrency, enrolled.enrollment.timeout_seconds)
        if before is not None and serving != (
            before.enrollment.container_concurrency,
            before.enrollment.timeout_seconds,
        ):
            for listener in self._changed_listeners:
                listener(ref)
        if before is not None and before.settings == enrolled.settings:
            return
        if before is None:
            self._actuator.track(ref, deployment)
        self._service.add_revision(ref, enrolled.settings)
        verb = "enrolled" if before is None else "settings changed"
        spec = enrolled.settings
        summary = (
            f"{verb}: scaled by kpa-controller (scale {spec.min_scale}..{spec.max_scale or 'unbounded'}, "
            f"{spec.spec.scaling_metric} target {spec.spec.target_value:g} per pod, "
            f"container concurrency {spec.container_concurrency or 'unlimited'})"
        )
        log.info("%s (revision %s): %s", _where(source), ref, summary)
        # Enrolment itself is only logged: every revision is enrolled again at each controller start,
        # and a thousand Events per restart would say nothing new. A settings change is news.
        if before is not None and self._events is not None:
            self._events.normal(source, "SettingsChanged", summary)

    def _refuse(self, ref: RevisionKey, source: Mapping[str, Any], message: str) -> None:
        kept = ref in self._enrolled
        note = "the last good settings stay in use" if kept else "the revision is not scaled"
        self._refused[ref] = message
        if self._events is not None:
            self._events.warning(source, "InvalidAutoscaling", f"{message}; {note}")
        else:
            log.warning("%s: %s; %s", _where(source), message, note)

    def _drop(self, ref: RevisionKey) -> None:
        self._refused.pop(ref, None)
        if self._enrolled.pop(ref, None) is None:
            return
        log.info("revision %s: no longer enrolled; not scaled from now on", ref)
        self._service.remove_revision(ref)
        self._actuator.untrack(ref)
        for listener in self._removed_listeners:
            try:
                listener(ref)
            except Exception:
                log.exception("revision %s: a removal listener failed", ref)
