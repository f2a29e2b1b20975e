"""Kubernetes' HPA algorithm, checked on cases computed by hand from the Kubernetes documentation's
description (kubernetes.io, "Horizontal Pod Autoscaling": algorithm details, stabilization window,
scaling policies, selectPolicy); and Knative's HPA class on top of it."""

from __future__ import annotations

import pytest
from tables import named

from autoscaler.config import AutoscalerConfigError
from autoscaler.hpa import (
    DEFAULT_SCALE_DOWN,
    DEFAULT_SCALE_UP,
    HPAPolicy,
    HPAScaler,
    ScalingPolicy,
    ScalingRules,
    parse_behavior,
    replicas_for,
)
from autoscaler.policy import Observation, PolicyError
from autoscaler.revision import settings_from

A = "autoscaling.knative.dev/"


@pytest.mark.parametrize(
    ("behaviour", "current", "ready", "ratio", "desired"),
    named(
        [
            ("metric twice the target doubles the replicas (200m of 100m)", 4, 4, 2.0, 8),
            ("metric half the target halves the replicas (50m of 100m)", 4, 4, 0.5, 2),
            ("ratio 1.05 is inside the 0.1 tolerance: no change", 10, 10, 1.05, 10),
            ("ratio 1.09 is inside the tolerance: no change", 10, 10, 1.09, 10),
            ("ratio 0.91 is inside the tolerance: no change", 10, 10, 0.91, 10),
            ("ratio 1.11 leaves the band: ceil(11.1) = 12", 10, 10, 1.11, 12),
            ("desired is rounded up: ceil(3 x 1.5) = 5", 3, 3, 1.5, 5),
            ("an unready pod counts as 0 % when scaling up: 1.5 x 3/4 -> ceil(1.125 x 4) = 5", 4, 3, 1.5, 5),
            ("a recount below the target skips scaling: 1.5 x 2/4 = 0.75", 4, 2, 1.5, 4),
            ("scaling down counts only the ready pods: ceil(0.5 x 3) = 2", 4, 3, 0.5, 2),
            ("no ready pod means no metrics: no change", 3, 0, 5.0, 3),
        ]
    ),
)
def test_replica_calculator(behaviour, current, ready, ratio, desired):
    assert replicas_for(current, ready, ratio) == desired


FAST_DOWN = ScalingRules(0, "Max", (ScalingPolicy("Percent", 100, 15),))


@pytest.mark.parametrize(
    ("behaviour", "up", "down", "bounds", "syncs"),
    named(
        [
            (
                "scale-down stabilization keeps the max of the recommendations of the last 300 s",
                DEFAULT_SCALE_UP,
                DEFAULT_SCALE_DOWN,
                (1, 100),
                [(0, 10, 10, 10), (15, 10, 2, 10), (299, 10, 2, 10), (300, 10, 2, 2)],
            ),
            (
                "a higher recommendation inside the window holds the scale",
                DEFAULT_SCALE_UP,
                DEFAULT_SCALE_DOWN,
                (1, 100),
                [(0, 4, 4, 4), (100, 4, 8, 8), (200, 8, 3, 8), (350, 8, 3, 8), (401, 8, 3, 3)],
            ),
            (
                "scale-up defaults: the larger of 100 % and 4 pods per 15 s",
                DEFAULT_SCALE_UP,
                DEFAULT_SCALE_DOWN,
                (1, 100),
                [(0, 2, 20, 6), (5, 6, 20, 6), (16, 6, 20, 12), (31, 12, 20, 20)],
            ),
            (
                "selectPolicy Min takes the smaller change: 4 pods over 100 %",
                ScalingRules(0, "Min", DEFAULT_SCALE_UP.policies),
                DEFAULT_SCALE_DOWN,
                (1, 100),
                [(0, 10, 40, 14), (16, 14, 40, 18)],
            ),
            (
                "selectPolicy Disabled never scales that way",
                DEFAULT_SCALE_UP,
                ScalingRules(0, "Disabled", ()),
                (1, 100),
                [(0, 10, 1, 10), (400, 10, 1, 10), (401, 10, 12, 12)],
            ),
            (
                "1 pod per 60 s down: one step per period, counted from the period's start",
                DEFAULT_SCALE_UP,
                ScalingRules(0, "Max", (ScalingPolicy("Pods", 1, 60),)),
                (1, 100),
                [(0, 10, 2, 9), (30, 9, 2, 9), (61, 9, 2, 8)],
            ),
            (
                "minReplicas bounds the way down, maxReplicas the way up",
                DEFAULT_SCALE_UP,
                FAST_DOWN,
                (2, 5),
                [(0, 4, 0, 2), (15, 2, 50, 5), (30, 5, 50, 5)],
            ),
            (
                "replicas outside the bounds are brought inside at once",
                DEFAULT_SCALE_UP,
                FAST_DOWN,
                (2, 5),
                [(0, 0, 0, 2), (15, 9, 9, 5)],
            ),
        ]
    ),
)
def test_controller_behavior(behaviour, up, down, bounds, syncs):
    scaler = HPAScaler(bounds[0], bounds[1], up, down)
    got = [
        (now, current, proposed, scaler.sync(now, current, proposed)) for now, current, proposed, _ in syncs
    ]
    assert got == syncs


def test_behavior_is_read_with_kubernetes_field_names_and_defaults_for_what_is_left_out():
    up, down = parse_behavior(
        {
            "scaleDown": {
                "stabilizationWindowSeconds": 60,
                "policies": [{"type": "Pods", "value": 2, "periodSeconds": 30}],
            }
        }
    )
    assert up == DEFAULT_SCALE_UP
    assert down == ScalingRules(60.0, "Max", (ScalingPolicy("Pods", 2, 30.0),))


@pytest.mark.parametrize(
    ("behaviour", "behavior", "message"),
    named(
        [
            ("unknown direction", {"scaleSideways": {}}, "scaleUp and/or scaleDown"),
            (
                "bad selectPolicy",
                {"scaleUp": {"selectPolicy": "Most"}},
                "behavior.scaleUp.selectPolicy='Most'",
            ),
            (
                "bad policy type",
                {"scaleDown": {"policies": [{"type": "Cores", "value": 1}]}},
                "Pods or Percent",
            ),
            (
                "zero value",
                {"scaleDown": {"policies": [{"type": "Pods", "value": 0, "periodSeconds": 15}]}},
                "policies[0].value=0",
            ),
        ]
    ),
)
def test_a_bad_behavior_is_rejected_naming_the_field(behaviour, behavior, message):
    with pytest.raises(PolicyError, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse_behavior(behavior)


def seen(now, ready, requested, pod_concurrency, settings):
    return Observation(
        now, ready, requested, None, None, pod_concurrency or 0.0, pod_concurrency, False, settings
    )


def test_hpa_class_annotations_select_the_hpa_with_utilization_target():
    settings = settings_from(
        {A + "class": "hpa.autoscaling.knative.dev", A + "metric": "cpu", A + "target": "50"}
    )
    assert settings.policy is not None and settings.policy.name == "hpa"
    assert settings.policy.kwargs == {"metric": "cpu", "target": 50.0}


@pytest.mark.parametrize(
    ("behaviour", "annotations", "message"),
    named(
        [
            ("metric rps is not an HPA metric", {A + "metric": "rps"}, "must be one of cpu, memory"),
            ("target is a percentage", {A + "target": "lots"}, "utilization percentage"),
        ]
    ),
)
def test_hpa_class_rejects_what_the_hpa_cannot_use(behaviour, annotations, message):
    with pytest.raises(AutoscalerConfigError, match=message):
        settings_from({A + "class": "hpa.autoscaling.knative.dev", **annotations})


def test_hpa_policy_reads_cpu_through_the_metrics_pipeline_and_never_goes_below_one_pod():
    """cc 1: busy cores are at most one per pod. The first sync has no metrics; the metrics-server
    publishes its 30 s average at t=30; the sync at t=30 reads it: 4 pods busy at 100 % of an
    80 % target -> ceil(4 x 1.25) = 5. Idle afterwards, the 300 s window holds 5, then 1, never 0."""
    settings = settings_from({A + "class": "hpa.autoscaling.knative.dev"}, container_concurrency=1)
    hpa = HPAPolicy(settings, 0.0, **settings.policy.kwargs)
    replicas, timeline = 4, {}
    for now in range(0, 700, 2):
        busy = 10.0 if now < 60 else 0.0
        replicas = hpa.decide(seen(float(now), replicas, replicas, busy, settings)).desired_pods
        timeline[now] = replicas
    assert timeline[0] == 4 and timeline[28] == 4
    assert timeline[30] == 5
    assert max(timeline.values()) >= 5
    assert timeline[358] >= 5  # stabilization: the max over the last 300 s
    assert min(timeline.values()) == 1 and timeline[698] == 1
