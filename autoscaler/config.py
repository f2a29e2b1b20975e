"""Knative's autoscaling configuration: the ``config-autoscaler`` keys and ``autoscaling.knative.dev/*``
annotations, with Knative's names, defaults, legacy aliases and validation ranges.

One deliberate difference: Knative's admission webhook rejects a bad annotation before the autoscaler
ever reads it, and the autoscaler then treats an unparsable value as absent. There is no webhook here,
so every bad value is rejected at parse time with an :class:`AutoscalerConfigError` that names the key,
the value and what is allowed — e.g. ``annotation autoscaling.knative.dev/target="abc": not a number``.
Each value is read with Go's grammar for its type (:mod:`autoscaler.values`).
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from autoscaler.values import (
    AutoscalerConfigError,
    Reader,
    parse_bool,
    parse_duration,
    parse_float,
    parse_int32,
    whole_seconds,
)

__all__ = [
    "ANNOTATION_PREFIX",
    "HPA_CLASS",
    "KPA_CLASS",
    "LINEAR",
    "WEIGHTED_EXPONENTIAL",
    "AutoscalerConfig",
    "AutoscalerConfigError",
    "RevisionAnnotations",
    "initial_scale",
    "panic_window",
    "parse_annotations",
    "parse_config",
    "parse_duration",
    "resolve_metric_target",
]

ANNOTATION_PREFIX = "autoscaling.knative.dev/"
PROGRESS_DEADLINE_ANNOTATION = "serving.knative.dev/progress-deadline"
KPA_CLASS = "kpa.autoscaling.knative.dev"
HPA_CLASS = "hpa.autoscaling.knative.dev"
LINEAR = "linear"
WEIGHTED_EXPONENTIAL = "weighted-exponential"
_ALGORITHMS = {
    LINEAR: LINEAR,
    WEIGHTED_EXPONENTIAL: WEIGHTED_EXPONENTIAL,
    "weightedExponential": WEIGHTED_EXPONENTIAL,
}
_METRICS = ("concurrency", "rps")

TARGET_MIN = 0.01  # the smallest target value Knative allows (register.go TargetMin)
RPS_TARGET_UTILIZATION = 0.7  # fixed: there is no config key for the RPS utilization
WINDOW_MIN, WINDOW_MAX = 6.0, 3600.0


# -- config-autoscaler -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AutoscalerConfig:
    """config-autoscaler, parsed and validated; durations in seconds, percentages as given."""

    container_concurrency_target_fraction: float = 0.7
    container_concurrency_target_default: float = 100.0
    requests_per_second_target_default: float = 200.0
    target_burst_capacity: float = 211.0
    stable_window: float = 60.0
    panic_window_percentage: float = 10.0
    panic_threshold_percentage: float = 200.0
    max_scale_up_rate: float = 1000.0
    max_scale_down_rate: float = 2.0
    enable_scale_to_zero: bool = True
    scale_to_zero_grace_period: float = 30.0
    scale_to_zero_pod_retention_period: float = 0.0
    activator_capacity: float = 100.0
    initial_scale: int = 1
    allow_zero_initial_scale: bool = False
    min_scale: int = 0
    max_scale: int = 0
    max_scale_limit: int = 0
    scale_down_delay: float = 0.0
    pod_autoscaler_class: str = KPA_CLASS
    progress_deadline: float = 600.0  # config-deployment `progress-deadline`, accepted here too


_CONFIG_KEYS: dict[str, tuple[str, Callable[[str], object]]] = {
    "container-concurrency-target-percentage": ("container_concurrency_target_fraction", parse_float),
    "container-concurrency-target-default": ("container_concurrency_target_default", parse_float),
    "requests-per-second-target-default": ("requests_per_second_target_default", parse_float),
    "target-burst-capacity": ("target_burst_capacity", parse_float),
    "stable-window": ("stable_window", parse_duration),
    "panic-window-percentage": ("panic_window_percentage", parse_float),
    "panic-threshold-percentage": ("panic_threshold_percentage", parse_float),
    "max-scale-up-rate": ("max_scale_up_rate", parse_float),
    "max-scale-down-rate": ("max_scale_down_rate", parse_float),
    "enable-scale-to-zero": ("enable_scale_to_zero", parse_bool),
    "scale-to-zero-grace-period": ("scale_to_zero_grace_period", parse_duration),
    "scale-to-zero-pod-retention-period": ("scale_to_zero_pod_retention_period", parse_duration),
    "activator-capacity": ("activator_capacity", parse_float),
    "initial-scale": ("initial_scale", parse_int32),
    "allow-zero-initial-scale": ("allow_zero_initial_scale", parse_bool),
    "min-scale": ("min_scale", parse_int32),
    "max-scale": ("max_scale", parse_int32),
    "max-scale-limit": ("max_scale_limit", parse_int32),
    "scale-down-delay": ("scale_down_delay", parse_duration),
    "pod-autoscaler-class": ("pod_autoscaler_class", str),
    "progress-deadline": ("progress_deadline", parse_duration),
}


# Keys Knative's own config-autoscaler may carry that mean nothing to the decision.
_IGNORED_CONFIG_KEYS = frozenset({"_example", "tick-interval", "panic-window"})
CONFIG_KEYS = frozenset(_CONFIG_KEYS)


def parse_config(data: Mapping[str, str] | None = None, *, strict: bool = False) -> AutoscalerConfig:
    """Parse config-autoscaler data (string values, as in a ConfigMap) over Knative's defaults.

    Unknown keys are ignored, as Knative ignores them (its retired ``tick-interval``/``panic-window``
    keys and ``_example`` included); ``progress-deadline`` from config-deployment is read here too.
    ``strict`` rejects unknown keys instead: for files a person writes for us (a stack file, a
    scenario), where an unknown key is a typo that would otherwise change nothing, silently.
    """
    data = dict(data or {})
    if strict:
        for key in sorted(set(data) - CONFIG_KEYS - _IGNORED_CONFIG_KEYS):
            close = difflib.get_close_matches(key, sorted(CONFIG_KEYS), n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            known = ", ".join(sorted(CONFIG_KEYS))
            raise AutoscalerConfigError(
                f'config-autoscaler {key}="{data[key]}": unknown key; {hint}known: {known}'
            )
    reader = Reader(lambda key: f"config-autoscaler {key}", data)
    values: dict[str, Any] = {}  # field -> value, each of the type its table entry's parser returns
    for key, (name, parse) in _CONFIG_KEYS.items():
        found = reader.get((key,), parse)
        if found is not None:
            values[name] = found[1]
    fraction = values.get("container_concurrency_target_fraction")
    if isinstance(fraction, float) and fraction > 1.0:
        values["container_concurrency_target_fraction"] = fraction / 100.0  # "70" means 70 %, "1" means 100 %
    config = AutoscalerConfig(**values)
    _validate_config(config, reader, data)
    return config


def _validate_config(c: AutoscalerConfig, reader: Reader, data: Mapping[str, str]) -> None:
    def check(key: str, ok: bool, allowed: str) -> None:
        if not ok:
            if key in data:
                raise reader.fail(key, allowed)
            raise AutoscalerConfigError(f"config-autoscaler {key}: {allowed}")

    fraction = c.container_concurrency_target_fraction
    check(
        "container-concurrency-target-percentage",
        0 < fraction <= 1,
        "must be in (0, 100] percent; values <= 1 are read as fractions (0.7 = 70 %)",
    )
    check(
        "container-concurrency-target-default",
        fraction * c.container_concurrency_target_default >= TARGET_MIN,
        f"target concurrency (default x percentage) must be at least {TARGET_MIN}",
    )
    check(
        "requests-per-second-target-default",
        c.requests_per_second_target_default >= TARGET_MIN,
        f"must be at least {TARGET_MIN}",
    )
    check(
        "target-burst-capacity",
        c.target_burst_capacity >= 0 or c.target_burst_capacity == -1,
        "must be >= 0, or -1 for an unlimited burst capacity",
    )
    check("stable-window", WINDOW_MIN <= c.stable_window <= WINDOW_MAX, "must be in [6s, 1h]")
    check("stable-window", whole_seconds(c.stable_window), "must be a whole number of seconds")
    check("panic-window-percentage", 1 <= c.panic_window_percentage <= 100, "must be in [1, 100]")
    check("max-scale-up-rate", c.max_scale_up_rate > 1, "must be greater than 1")
    check("max-scale-down-rate", c.max_scale_down_rate > 1, "must be greater than 1")
    check("scale-to-zero-grace-period", c.scale_to_zero_grace_period > 0, "must be positive")
    check(
        "scale-to-zero-pod-retention-period",
        c.scale_to_zero_pod_retention_period >= 0,
        "must not be negative",
    )
    check("activator-capacity", c.activator_capacity >= 1, "must be at least 1")
    check(
        "initial-scale",
        c.initial_scale >= 1 or (c.initial_scale == 0 and c.allow_zero_initial_scale),
        "must be at least 1 (0 only with allow-zero-initial-scale: true)",
    )
    check("min-scale", c.min_scale >= 0, "must not be negative")
    check("max-scale-limit", c.max_scale_limit >= 0, "must not be negative")
    if c.max_scale_limit > 0:
        check(
            "max-scale",
            1 <= c.max_scale <= c.max_scale_limit,
            f"must be in [1, max-scale-limit={c.max_scale_limit}]",
        )
    check("max-scale", c.max_scale >= 0, "must not be negative (0 means unlimited)")
    check(
        "min-scale",
        c.max_scale == 0 or c.min_scale <= c.max_scale,
        f"must not exceed max-scale={c.max_scale}",
    )
    check("scale-down-delay", c.scale_down_delay >= 0, "must not be negative")
    check("scale-down-delay", whole_seconds(c.scale_down_delay), "must be a whole number of seconds")
    check(
        "pod-autoscaler-class",
        c.pod_autoscaler_class == KPA_CLASS,
        f"only {KPA_CLASS} is implemented by this autoscaler",
    )
    check("progress-deadline", c.progress_deadline > 0, "must be positive")


# -- per-revision annotations -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RevisionAnnotations:
    """The autoscaling annotations of one revision, parsed; None means "not set, use the config"."""

    metric: str | None = None
    target: float | None = None
    target_utilization: float | None = None  # a fraction: the percentage annotation / 100
    target_burst_capacity: float | None = None
    window: float | None = None
    panic_window_percentage: float | None = None
    panic_threshold_percentage: float | None = None
    min_scale: int | None = None
    max_scale: int | None = None
    initial_scale: int | None = None
    activation_scale: int | None = None
    scale_down_delay: float | None = None
    scale_to_zero_pod_retention_period: float | None = None
    metric_aggregation_algorithm: str | None = None
    progress_deadline: float | None = None


def _one_of(choices: Mapping[str, str] | tuple[str, ...]) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if text not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}")
        return choices[text] if isinstance(choices, Mapping) else text

    return parse


def _ann(name: str, alias: str | None = None) -> tuple[str, ...]:
    return (ANNOTATION_PREFIX + name,) + ((ANNOTATION_PREFIX + alias,) if alias else ())


# field -> (keys, new name first then legacy alias; parser)
_ANNOTATIONS: dict[str, tuple[tuple[str, ...], Callable[[str], object]]] = {
    "metric": (_ann("metric"), _one_of(_METRICS)),
    "target": (_ann("target"), parse_float),
    "target_utilization": (_ann("target-utilization-percentage", "targetUtilizationPercentage"), parse_float),
    "target_burst_capacity": (_ann("target-burst-capacity", "targetBurstCapacity"), parse_float),
    "window": (_ann("window"), parse_duration),
    "panic_window_percentage": (_ann("panic-window-percentage", "panicWindowPercentage"), parse_float),
    "panic_threshold_percentage": (
        _ann("panic-threshold-percentage", "panicThresholdPercentage"),
        parse_float,
    ),
    "min_scale": (_ann("min-scale", "minScale"), parse_int32),
    "max_scale": (_ann("max-scale", "maxScale"), parse_int32),
    "initial_scale": (_ann("initial-scale", "initialScale"), parse_int32),
    "activation_scale": (_ann("activation-scale"), parse_int32),
    "scale_down_delay": (_ann("scale-down-delay", "scaleDownDelay"), parse_duration),
    "scale_to_zero_pod_retention_period": (
        _ann("scale-to-zero-pod-retention-period", "scaleToZeroPodRetentionPeriod"),
        parse_duration,
    ),
    "metric_aggregation_algorithm": (
        _ann("metric-aggregation-algorithm", "metricAggregationAlgorithm"),
        _one_of(_ALGORITHMS),
    ),
    "progress_deadline": ((PROGRESS_DEADLINE_ANNOTATION,), parse_duration),
}
_CLASS_KEY = ANNOTATION_PREFIX + "class"
ANNOTATION_KEYS = frozenset({_CLASS_KEY}.union(*(keys for keys, _ in _ANNOTATIONS.values())))


def parse_annotations(
    annotations: Mapping[str, str] | None, config: AutoscalerConfig | None = None
) -> RevisionAnnotations:
    """Parse and validate a revision's autoscaling annotations (other annotations are ignored).

    ``config`` supplies the cluster-wide limits some annotations are checked against
    (``max-scale-limit``, ``allow-zero-initial-scale``).
    """
    config = config or AutoscalerConfig()
    given = annotations or {}
    data = {k: v for k, v in given.items() if k.startswith(ANNOTATION_PREFIX)}
    if PROGRESS_DEADLINE_ANNOTATION in given:
        data[PROGRESS_DEADLINE_ANNOTATION] = given[PROGRESS_DEADLINE_ANNOTATION]
    reader = Reader(lambda key: f"annotation {key}", data)
    unknown = sorted(set(data) - ANNOTATION_KEYS)
    if unknown:
        raise AutoscalerConfigError(
            f'annotation {unknown[0]}="{data[unknown[0]]}": unknown autoscaling annotation; '
            f"known: {', '.join(sorted(k.removeprefix(ANNOTATION_PREFIX) for k in ANNOTATION_KEYS))}"
        )
    found_class = reader.get((_CLASS_KEY,), str)
    if found_class is not None and found_class[1] != KPA_CLASS:
        raise reader.fail(_CLASS_KEY, f"only {KPA_CLASS} is implemented by this autoscaler")

    values: dict[str, Any] = {}  # field -> value, each of the type its table entry's parser returns
    keys: dict[str, str] = {}
    for name, (names, parse) in _ANNOTATIONS.items():
        found = reader.get(names, parse)
        if found is not None:
            keys[name], values[name] = found

    def check(name: str, ok: bool, allowed: str) -> None:
        if name in values and not ok:
            raise reader.fail(keys[name], allowed)

    def value(name: str) -> float:
        number = values.get(name, 0)
        assert isinstance(number, int | float), name  # asked only of numeric annotations
        return number

    check("target", value("target") >= TARGET_MIN, f"must be at least {TARGET_MIN}")
    check("target_utilization", 1 <= value("target_utilization") <= 100, "must be in [1, 100]")
    tbc = value("target_burst_capacity")
    check(
        "target_burst_capacity", tbc >= 0 or tbc == -1, "must be >= 0, or -1 for an unlimited burst capacity"
    )
    check("window", WINDOW_MIN <= value("window") <= WINDOW_MAX, "must be in [6s, 1h]")
    check("window", whole_seconds(value("window")), "must be a whole number of seconds")
    check("panic_window_percentage", 1 <= value("panic_window_percentage") <= 100, "must be in [1, 100]")
    check(
        "panic_threshold_percentage",
        110 <= value("panic_threshold_percentage") <= 1000,
        "must be in [110, 1000]",
    )
    check("min_scale", value("min_scale") >= 0, "must not be negative")
    max_scale = value("max_scale")
    check("max_scale", max_scale >= 0, "must not be negative (0 means unlimited)")
    check(
        "max_scale",
        max_scale == 0 or max_scale >= value("min_scale"),
        f"must not be less than min-scale={int(value('min_scale'))}",
    )
    if config.max_scale_limit > 0:
        check(
            "max_scale",
            1 <= max_scale <= config.max_scale_limit,
            f"must be in [1, max-scale-limit={config.max_scale_limit}] (0, unlimited, is not allowed)",
        )
    initial = value("initial_scale")
    check(
        "initial_scale",
        initial >= 1 or (initial == 0 and config.allow_zero_initial_scale),
        "must be at least 1 (0 only with allow-zero-initial-scale: true)",
    )
    activation = value("activation_scale")
    check("activation_scale", activation >= 2, "must be at least 2")
    check(
        "activation_scale",
        activation >= value("min_scale"),
        f"must not be less than min-scale={int(value('min_scale'))}",
    )
    check(
        "activation_scale",
        max_scale == 0 or activation <= max_scale,
        f"must not exceed max-scale={int(max_scale)}",
    )
    delay = value("scale_down_delay")
    check("scale_down_delay", 0 <= delay <= WINDOW_MAX, "must be in [0s, 1h]")
    check("scale_down_delay", whole_seconds(delay), "must be a whole number of seconds")
    retention = value("scale_to_zero_pod_retention_period")
    check("scale_to_zero_pod_retention_period", 0 <= retention <= WINDOW_MAX, "must be in [0s, 1h]")
    check("progress_deadline", value("progress_deadline") > 0, "must be positive")

    if "target_utilization" in values:
        values["target_utilization"] = value("target_utilization") / 100.0
    return RevisionAnnotations(**values)


# -- resolution ---------------------------------------------------------------------------------------


def resolve_metric_target(
    config: AutoscalerConfig, annotations: RevisionAnnotations, container_concurrency: int = 0
) -> tuple[float, float]:
    """``(target_value, total_value)`` for the revision's metric (Knative ``ResolveMetricTarget``).

    Concurrency: the total is containerConcurrency if set, else the config default; RPS: the RPS default.
    The ``target`` annotation replaces the total (capped at containerConcurrency); the target value is
    ``max(0.01, total × utilization)``.
    """
    if container_concurrency < 0:
        raise AutoscalerConfigError(
            f"containerConcurrency={container_concurrency}: must not be negative (0 means unlimited)"
        )
    if (annotations.metric or "concurrency") == "rps":
        total = config.requests_per_second_target_default
        utilization = RPS_TARGET_UTILIZATION
    else:
        total = (
            float(container_concurrency)
            if container_concurrency
            else config.container_concurrency_target_default
        )
        utilization = config.container_concurrency_target_fraction
    if annotations.target is not None:
        total = annotations.target
        if (annotations.metric or "concurrency") != "rps" and container_concurrency > 0:
            total = min(total, float(container_concurrency))
    if annotations.target_utilization is not None:
        utilization = annotations.target_utilization
    return max(TARGET_MIN, total * utilization), total


def panic_window(stable_window: float, panic_window_percentage: float) -> float:
    """The panic window in seconds: stable × percentage / 100 rounded to the second, at least 1 s."""
    nanos = int(float(round(stable_window * 1e9)) * panic_window_percentage / 100.0)
    seconds = (nanos + 500_000_000) // 1_000_000_000  # Go Duration.Round(time.Second): halves away from zero
    return float(max(1, seconds))


def initial_scale(config: AutoscalerConfig, annotations: RevisionAnnotations) -> int:
    """The revision's initial scale: the annotation, else the config (Knative ``GetInitialScale``)."""
    return config.initial_scale if annotations.initial_scale is None else annotations.initial_scale
