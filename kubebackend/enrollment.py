"""Which workloads the controller scales, and with which knobs: pure, from the objects' JSON.

Two kinds of object enrol a revision:

* a **Deployment** annotated ``autoscaling.knative.dev/class: kpa.autoscaling.knative.dev`` — the
  revision is the Deployment itself; Knative's ``autoscaling.knative.dev/*`` annotations on it work
  unchanged, and since a Deployment has no ``containerConcurrency`` or ``timeoutSeconds`` field two
  annotations of ours carry them;
* a **KServe InferenceService** with ``serving.kserve.io/autoscalerClass: external`` (KServe then
  makes no HPA and leaves the predictor Deployment's replicas alone) in RawDeployment/Standard mode —
  the revision is its predictor Deployment, found by KServe's labels, never by name (a named
  predictor is ``{isvc}-{name}-predictor``). KServe's own fields map onto the KPA's settings.

A Deployment KServe generated carries ``serving.kserve.io/inferenceservice``: it is enrolled through
its InferenceService, never on its own, so one revision never has two owners. Everything here takes
and returns plain data, so the controller, tests and a future admission check share one reading.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from autoscaler.config import ANNOTATION_PREFIX, KPA_CLASS
from queueproxy.payload_events import (
    LoggerConfigError,
    LoggerSpec,
    logger_of_annotations,
    logger_of_predictor,
)

CLASS_ANNOTATION = ANNOTATION_PREFIX + "class"
CONTAINER_CONCURRENCY_ANNOTATION = "kpa-emulator.dev/container-concurrency"
TIMEOUT_ANNOTATION = "kpa-emulator.dev/timeout-seconds"
KSERVE_AUTOSCALER_CLASS = "serving.kserve.io/autoscalerClass"
KSERVE_DEPLOYMENT_MODE = "serving.kserve.io/deploymentMode"
KSERVE_ISVC_LABEL = "serving.kserve.io/inferenceservice"
KSERVE_COMPONENT_LABEL = "component"
EXTERNAL = "external"
# Modes in which KServe makes a plain Deployment (older releases say RawDeployment, newer Standard).
RAW_MODES = ("Standard", "RawDeployment")
DEFAULT_TIMEOUT_SECONDS = 300  # Knative's revision-timeout-seconds default
KSERVE_DEFAULT_MIN_REPLICAS = 1  # KServe's default for spec.predictor.minReplicas
_KSERVE_METRICS = ("concurrency", "rps")


class EnrollmentError(ValueError):
    """An enrolled object asks for something the KPA cannot do; the message names the field and the fix."""


@dataclass(frozen=True, slots=True)
class Enrollment:
    """One revision the controller scales.

    ``annotations`` are Knative autoscaling annotations (what ``autoscaler.revision.settings_from``
    reads), KServe's fields already mapped onto them; ``selector`` is the label selector that finds
    the revision's Deployment (by name for a plain Deployment, by KServe's labels for a predictor).
    """

    kind: str  # "Deployment" | "InferenceService"
    namespace: str
    name: str  # the enrolling object's name (the Deployment's, or the InferenceService's)
    annotations: Mapping[str, str] = field(default_factory=dict)
    container_concurrency: int = 0
    timeout_seconds: int = DEFAULT_TIMEOUT_SECONDS
    selector: Mapping[str, str] = field(default_factory=dict)
    logger: LoggerSpec | None = None  # spec.predictor.logger, or the logger.* annotations


def _meta(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    meta = obj.get("metadata")
    return meta if isinstance(meta, Mapping) else {}


def _annotations(obj: Mapping[str, Any]) -> dict[str, str]:
    found = _meta(obj).get("annotations")
    return {str(k): str(v) for k, v in found.items()} if isinstance(found, Mapping) else {}


def _labels(obj: Mapping[str, Any]) -> dict[str, str]:
    found = _meta(obj).get("labels")
    return {str(k): str(v) for k, v in found.items()} if isinstance(found, Mapping) else {}


def _where(obj: Mapping[str, Any]) -> str:
    meta = _meta(obj)
    return f"{obj.get('kind', 'object')} {meta.get('namespace', 'default')}/{meta.get('name', '?')}"


def is_enrolled_deployment(obj: Mapping[str, Any]) -> bool:
    """A Deployment the KPA scales on its own: Knative's class annotation, not made by KServe."""
    return _annotations(obj).get(CLASS_ANNOTATION) == KPA_CLASS and KSERVE_ISVC_LABEL not in _labels(obj)


def is_enrolled_inference_service(obj: Mapping[str, Any]) -> bool:
    """An InferenceService asking for an external autoscaler in a mode that makes a Deployment."""
    annotations = _annotations(obj)
    mode = annotations.get(KSERVE_DEPLOYMENT_MODE, RAW_MODES[0])
    return annotations.get(KSERVE_AUTOSCALER_CLASS) == EXTERNAL and mode in RAW_MODES


def _whole(where: str, key: str, value: object, low: int, fix: str) -> int:
    """An integer field or annotation value, at least ``low``; errors name the key and the fix."""
    if isinstance(value, bool):
        raise EnrollmentError(f'{where}: {key}="{value}": not a whole number; {fix}')
    if isinstance(value, int):
        number = value
    else:
        try:
            number = int(str(value).strip())
        except ValueError:
            raise EnrollmentError(f'{where}: {key}="{value}": not a whole number; {fix}') from None
    if number < low:
        raise EnrollmentError(f'{where}: {key}="{value}": must be at least {low}; {fix}')
    return number


def enrollment_of_deployment(obj: Mapping[str, Any]) -> Enrollment:
    """The revision a KPA-class Deployment enrols (call only when :func:`is_enrolled_deployment`)."""
    where, meta, annotations = _where(obj), _meta(obj), _annotations(obj)
    cc = annotations.get(CONTAINER_CONCURRENCY_ANNOTATION, "0")
    timeout = annotations.get(TIMEOUT_ANNOTATION, str(DEFAULT_TIMEOUT_SECONDS))
    return Enrollment(
        kind="Deployment",
        namespace=str(meta.get("namespace") or "default"),
        name=str(meta.get("name") or ""),
        annotations={k: v for k, v in annotations.items() if k.startswith(ANNOTATION_PREFIX)},
        container_concurrency=_whole(
            where, f"annotation {CONTAINER_CONCURRENCY_ANNOTATION}", cc, 0, "0 means no limit"
        ),
        timeout_seconds=_whole(where, f"annotation {TIMEOUT_ANNOTATION}", timeout, 1, "seconds, e.g. 300"),
        selector={},
        logger=_logger(lambda: logger_of_annotations(annotations, where)),
    )


def _merge(where: str, annotations: dict[str, str], key: str, field_name: str, value: str | None) -> None:
    """Put a KServe field's value under its Knative annotation; both set and different is an error."""
    if value is None:
        return
    full = ANNOTATION_PREFIX + key
    if full in annotations and annotations[full] != value:
        raise EnrollmentError(
            f'{where}: spec.predictor.{field_name}={value} and annotation {full}="{annotations[full]}" '
            f"disagree; set one of them"
        )
    annotations[full] = value


def enrollment_of_inference_service(obj: Mapping[str, Any]) -> Enrollment:
    """The predictor revision an external-class InferenceService enrols, KServe fields mapped.

    ``minReplicas`` → ``min-scale`` (KServe's default 1 when absent; 0 allows scale to zero),
    ``maxReplicas`` → ``max-scale`` (raised to ``minReplicas`` when smaller, as KServe does; 0 or
    absent: no limit), ``scaleMetric`` → ``metric`` (``concurrency``/``rps``; ``cpu``/``memory`` are
    the HPA's), ``scaleTarget`` → ``target``, ``containerConcurrency`` and ``timeout`` as they are,
    ``logger: {url, mode}`` → the queue-proxy's payload logger (docs/payload-logging.md).
    """
    where, meta = _where(obj), _meta(obj)
    spec = obj.get("spec")
    predictor = spec.get("predictor") if isinstance(spec, Mapping) else None
    if not isinstance(predictor, Mapping):
        raise EnrollmentError(f"{where}: spec.predictor is missing; an InferenceService needs a predictor")
    annotations = {k: v for k, v in _annotations(obj).items() if k.startswith(ANNOTATION_PREFIX)}

    def number(key: str, low: int, fix: str) -> int | None:
        value = predictor.get(key)
        return None if value is None else _whole(where, f"spec.predictor.{key}", value, low, fix)

    low = number("minReplicas", 0, "0 lets the predictor scale to zero")
    if low is None and ANNOTATION_PREFIX + "min-scale" not in annotations:
        low = KSERVE_DEFAULT_MIN_REPLICAS
    high = number("maxReplicas", 0, "0 means no limit")
    if high and low is not None and high < low:
        high = low
    _merge(where, annotations, "min-scale", "minReplicas", None if low is None else str(low))
    _merge(where, annotations, "max-scale", "maxReplicas", str(high) if high else None)
    metric = predictor.get("scaleMetric")
    if metric is not None:
        if metric not in _KSERVE_METRICS:
            raise EnrollmentError(
                f'{where}: spec.predictor.scaleMetric="{metric}": the KPA scales on concurrency or rps; '
                f"for cpu or memory use serving.kserve.io/autoscalerClass: hpa"
            )
        _merge(where, annotations, "metric", "scaleMetric", str(metric))
    target = predictor.get("scaleTarget")
    if target is not None:
        value = _whole(where, "spec.predictor.scaleTarget", target, 1, "e.g. 10")
        _merge(where, annotations, "target", "scaleTarget", str(value))
    cc = number("containerConcurrency", 0, "0 means no limit") or 0
    timeout = number("timeout", 1, "seconds, e.g. 300") or DEFAULT_TIMEOUT_SECONDS
    name = str(meta.get("name") or "")
    return Enrollment(
        kind="InferenceService",
        namespace=str(meta.get("namespace") or "default"),
        name=name,
        annotations=annotations,
        container_concurrency=cc,
        timeout_seconds=timeout,
        selector={KSERVE_ISVC_LABEL: name, KSERVE_COMPONENT_LABEL: "predictor"},
        logger=_logger(lambda: logger_of_predictor(predictor, where)),
    )


def _logger(read: Callable[[], LoggerSpec | None]) -> LoggerSpec | None:
    """A logger read by the queue-proxy's own parser, its complaint made an ``EnrollmentError``."""
    try:
        return read()
    except LoggerConfigError as exc:
        raise EnrollmentError(str(exc)) from None


def selector_text(selector: Mapping[str, str]) -> str:
    """A ``labelSelector`` query value (``a=b,c=d``), sorted so it reads the same every time."""
    return ",".join(f"{key}={value}" for key, value in sorted(selector.items()))
