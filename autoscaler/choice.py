"""Which scaling policy a revision runs: :class:`PolicyChoice`, and Knative's HPA class annotation.

A revision runs the KPA unless it says otherwise, in one of two ways:

* Knative's own class annotation, ``autoscaling.knative.dev/class: hpa.autoscaling.knative.dev``, with
  ``autoscaling.knative.dev/metric`` ``cpu`` (default) or ``memory`` and ``autoscaling.knative.dev/target``
  as the utilization percentage (default 80, the HPA's own default) — :func:`class_choice` takes these
  three out of the annotations before the KPA's parser reads the rest (min-scale, max-scale, …);
* a ``policy:`` field in a scenario or a stack file (``hpa``, ``keda-http`` or ``module:Class``), read by
  :mod:`autoscaler.policy_loader`.

This module only names the choice; it imports no policy, so :mod:`autoscaler.revision` can carry one
in its settings without importing the policies (which import it).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from autoscaler.config import ANNOTATION_PREFIX, HPA_CLASS, AutoscalerConfigError

__all__ = ["HPA_METRICS", "KPA", "PolicyChoice", "class_choice"]

KPA = "kpa"
HPA_METRICS = ("cpu", "memory")
_CLASS, _METRIC, _TARGET = (ANNOTATION_PREFIX + k for k in ("class", "metric", "target"))


@dataclass(frozen=True, slots=True)
class PolicyChoice:
    """A policy by the name the user gave (``kpa``, ``hpa``, ``keda-http``, ``mymod:MyPolicy``).

    ``factory`` is the loaded class for a ``module:Class`` policy (None for the built-ins, found by
    name); ``options`` are the keyword arguments it is built with, besides settings and ``now``.
    """

    name: str
    factory: Callable[..., Any] | None = None
    options: tuple[tuple[str, Any], ...] = ()

    @property
    def kwargs(self) -> dict[str, Any]:
        return dict(self.options)


def class_choice(annotations: Mapping[str, str] | None) -> tuple[PolicyChoice | None, Mapping[str, str]]:
    """``(HPA choice or None, the annotations left for the KPA's parser)``.

    Only the HPA class is taken here; any other class goes on to the KPA's parser, which accepts
    ``kpa.autoscaling.knative.dev`` and rejects the rest with its usual message.
    """
    if not annotations or annotations.get(_CLASS) != HPA_CLASS:
        return None, annotations or {}
    rest = {k: v for k, v in annotations.items() if k not in (_CLASS, _METRIC, _TARGET)}
    metric = annotations.get(_METRIC, "cpu")
    if metric not in HPA_METRICS:
        raise AutoscalerConfigError(
            f'annotation {_METRIC}="{metric}": must be one of {", ".join(HPA_METRICS)}'
            f" with {_CLASS}={HPA_CLASS}"
        )
    options: list[tuple[str, Any]] = [("metric", metric)]
    if _TARGET in annotations:
        text = annotations[_TARGET]
        try:
            target = float(text)
        except ValueError:
            target = math.nan
        if not (math.isfinite(target) and target > 0):
            raise AutoscalerConfigError(
                f'annotation {_TARGET}="{text}": the HPA class reads it as a utilization'
                " percentage, a number > 0"
            )
        options.append(("target", target))
    return PolicyChoice("hpa", None, tuple(options)), rest
