"""When a revision may sleep: Lifecycle.settled_at_zero and RevisionAutoscaler.at_rest, table by table.

A many-revision simulation skips the ticks of a revision at rest (simulation.many); these cases pin
which states count as settled — every later reconcile wanting the same and changing nothing.
"""

import pytest
from tables import named

from autoscaler.lifecycle import (
    ACTIVATING,
    ACTIVE,
    INACTIVE,
    NO_TRAFFIC,
    Lifecycle,
    LifecycleSettings,
    PAStatus,
)
from autoscaler.revision import RevisionAutoscaler, settings_from
from autoscaler.stat import Stat

DEFAULTS = LifecycleSettings()  # 30 s grace period, no retention


@pytest.mark.parametrize(
    ("label", "settings", "state", "now", "desired", "settled"),
    named(
        [
            ("inactive past the grace period, desired 0", DEFAULTS, INACTIVE, 100.0, 0, True),
            ("inactive, never decided (desired unknown)", DEFAULTS, INACTIVE, 100.0, -1, True),
            ("inactive but still inside the grace period", DEFAULTS, INACTIVE, 10.0, 0, False),
            ("inactive, the decider wants a pod", DEFAULTS, INACTIVE, 100.0, 1, False),
            ("still activating", DEFAULTS, ACTIVATING, 100.0, 0, False),
            ("active", DEFAULTS, ACTIVE, 100.0, 0, False),
            ("min-scale 1 raises zero", LifecycleSettings(min_scale=1), INACTIVE, 100.0, 0, False),
            (
                "inside the pod retention period",
                LifecycleSettings(scale_to_zero_pod_retention=60),
                INACTIVE,
                40.0,
                0,
                False,
            ),
            (
                "past the pod retention period",
                LifecycleSettings(scale_to_zero_pod_retention=60),
                INACTIVE,
                100.0,
                0,
                True,
            ),
        ]
    ),
)
def test_settled_at_zero(label, settings, state, now, desired, settled):
    lifecycle = Lifecycle(settings, 0.0, PAStatus(state, 0.0, NO_TRAFFIC, True))
    assert lifecycle.settled_at_zero(now, desired) is settled
    if settled:  # and a reconcile from then on wants the same, asks nothing and keeps the state
        for later in (now, now + 7, now + 1000):
            step = lifecycle.step(later, desired, -211, 0)
            assert (step.want, step.requeue_after, step.state) == (desired, None, INACTIVE)
            assert lifecycle.status == PAStatus(state, 0.0, NO_TRAFFIC, True)


def at_rest_after_traffic(annotations: dict[str, str], idle_for: float) -> bool:
    """One request at t=0, then a decision every 2 s whose pods come and go at once, until ``idle_for``."""
    revision = RevisionAutoscaler(settings_from(annotations), 0.0, ready_pods=0)
    revision.record(Stat("activator", average_concurrent_requests=1.0, request_count=1.0), 0.0)
    now, ready = 0.0, 0
    while now <= idle_for:
        decision = revision.decide(now, ready)
        if decision.apply and decision.desired_pods >= 0:
            ready = decision.desired_pods
        now += 2.0
    return ready == 0 and revision.at_rest(now)


@pytest.mark.parametrize(
    ("label", "annotations", "idle_for", "rest"),
    named(
        [
            ("a stat within the stable window", {}, 30.0, False),
            ("no stat for a stable window and the grace period", {}, 200.0, True),
            (
                "target-burst-capacity -1: the windows never say 'no data'",
                {"autoscaling.knative.dev/target-burst-capacity": "-1"},
                200.0,
                False,
            ),
            ("min-scale 1 keeps a pod", {"autoscaling.knative.dev/min-scale": "1"}, 200.0, False),
        ]
    ),
)
def test_at_rest_needs_empty_windows_and_a_settled_zero(label, annotations, idle_for, rest):
    assert at_rest_after_traffic(annotations, idle_for) is rest
