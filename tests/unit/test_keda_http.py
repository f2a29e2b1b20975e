"""The KEDA HTTP add-on style policy against its documented formula: desired = ceil(pending /
targetValue) through the HPA's AverageValue (0.1 tolerance, 300 s scale-down stabilization), one pod
at once from zero, zero after scaledownPeriod with nothing pending, the interceptor always in path."""

from __future__ import annotations

import pytest
from tables import named

from autoscaler.keda_http import KedaHttpPolicy
from autoscaler.policy import Observation, PolicyError
from autoscaler.revision import settings_from

SETTINGS = settings_from({})


def run(policy, steps, start_pods):
    """Feed (now, pending) steps; the requested pods follow the policy's answers."""
    pods, got = start_pods, []
    for now, pending in steps:
        answer = policy.decide(Observation(now, pods, pods, None, None, pending, None, True, SETTINGS))
        pods = answer.desired_pods
        got.append(pods)
    return got


@pytest.mark.parametrize(
    ("behaviour", "options", "start", "steps", "expected"),
    named(
        [
            ("pending 250 at target 100: ceil(2.5) = 3", {}, 1, [(0, 250)], [3]),
            ("pending 105 on one pod is inside the tolerance", {}, 1, [(0, 105)], [1]),
            (
                "targetValue sets the per-pod pending count: ceil(50 / 10) = 5",
                {"targetValue": 10},
                1,
                [(0, 50)],
                [5],
            ),
            (
                "targetPendingRequests is the older name of the same target",
                {"targetPendingRequests": 10},
                1,
                [(0, 50)],
                [5],
            ),
            ("the first pending request at zero activates one pod at once", {}, 0, [(0, 0), (1, 1)], [0, 1]),
            (
                "the HPA syncs every 15 s, its default policies cap the step at +4",
                {},
                1,
                [(0, 1), (4, 900), (15, 900)],
                [1, 1, 5],
            ),
            (
                "scaling down above 1 waits for the 300 s stabilization window",
                {"scaledownPeriod": 1000},
                1,
                [(0, 500), (15, 100), (285, 100), (300, 100)],
                [5, 5, 5, 1],
            ),
            (
                "zero after scaledownPeriod with nothing pending, checked on the polling interval",
                {"scaledownPeriod": 60, "pollingInterval": 15},
                1,
                [(0, 1), (30, 0), (59, 0), (60, 0)],
                [1, 1, 1, 0],
            ),
        ]
    ),
)
def test_keda_http_formula(behaviour, options, start, steps, expected):
    assert run(KedaHttpPolicy(SETTINGS, 0.0, **options), steps, start) == expected


def test_the_interceptor_stays_in_the_path_at_every_scale():
    policy = KedaHttpPolicy(SETTINGS, 0.0)
    answer = policy.decide(Observation(0.0, 3, 3, None, None, 250.0, None, True, SETTINGS))
    assert answer.activator_in_path is True


def test_min_scale_keeps_it_from_zero_and_max_scale_caps_it():
    settings = settings_from(
        {"autoscaling.knative.dev/min-scale": "2", "autoscaling.knative.dev/max-scale": "4"}
    )
    policy = KedaHttpPolicy(settings, 0.0, scaledownPeriod=10)
    pods = []
    for now, pending in [(0, 2000), (400, 0), (800, 0)]:
        seen = Observation(now, 3, 3, None, None, pending, None, True, settings)
        pods.append(policy.decide(seen).desired_pods)
    assert pods[0] == 4 and min(pods) == 2


@pytest.mark.parametrize(
    ("behaviour", "options", "message"),
    named(
        [
            ("zero target", {"targetValue": 0}, "targetValue=0"),
            ("negative cooldown", {"scaledownPeriod": -5}, "scaledownPeriod=-5"),
            ("text polling interval", {"pollingInterval": "15s"}, "pollingInterval='15s'"),
        ]
    ),
)
def test_bad_options_are_rejected_naming_the_field(behaviour, options, message):
    with pytest.raises(PolicyError, match=message):
        KedaHttpPolicy(SETTINGS, 0.0, **options)
