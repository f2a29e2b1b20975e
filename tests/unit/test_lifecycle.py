"""Bounds and scale-to-zero sequencing (autoscaler.lifecycle).

``test_scaler_case`` models every case of Knative's ``TestScaler`` and ``TestDisableScaleToZero``
(pkg/reconciler/autoscaling/kpa/scaler_test.go): the PA condition and its age, the decider's wish, the
bounds and config, the activator probe and the SKS. Knative's "want scaling" means a patch was sent,
i.e. the scale applies *and* differs from the current replicas; "enqueue" counts re-queues.
"""

from dataclasses import dataclass, field, replace

import pytest
from tables import named

from autoscaler.lifecycle import (
    ACTIVATING,
    ACTIVE,
    INACTIVE,
    PROXY,
    SERVE,
    Lifecycle,
    LifecycleSettings,
    PAStatus,
    scale_target,
)

NOW = 1_000_000.0
STABLE_WINDOW = 300.0  # Knative's test config: 5 minutes
PA_STABLE_WINDOW = 45.0  # the custom window annotation used by some cases
GRACE = 60.0
ACTIVATION_TIMEOUT = 600.0 + 30.0


@dataclass(frozen=True)
class Case:
    label: str
    start_replicas: int
    scale_to: int
    want_replicas: int
    want_scaling: bool
    state: str = ACTIVATING  # a fresh PA is Activating (Active condition Unknown)
    age: float = 0.0  # seconds in that state
    min_scale: int = 0
    max_scale: int = 0
    settings: dict = field(default_factory=dict)
    initialized: bool = False
    activator_in_path: bool = True
    proxy_for: float | None = None  # how long the SKS has been proxying
    sks_proxy: bool = False
    want_requeue: bool = False
    want_probe: bool = False


CASES = [
    Case("waits to scale to zero (just before idle period)", 1, 0, 1, False, ACTIVE, STABLE_WINDOW - 1,
         want_requeue=True),
    Case("waits to scale to zero (just before idle period), custom PA window", 1, 0, 1, False, ACTIVE,
         PA_STABLE_WINDOW - 1, settings={"stable_window": PA_STABLE_WINDOW}, want_requeue=True),
    Case("custom PA window, check for standard window, no probe", 1, 0, 0, False, ACTIVE, STABLE_WINDOW,
         settings={"stable_window": PA_STABLE_WINDOW}),
    Case("scale to 1 waiting for idle expires", 10, 0, 1, True, ACTIVE, STABLE_WINDOW - 1, want_requeue=True),
    Case("waits to scale to zero after idle period", 1, 0, 0, False, ACTIVE, STABLE_WINDOW),
    Case("waits to scale to zero after idle period; sks in proxy mode", 1, 0, 0, False, ACTIVE, STABLE_WINDOW,
         sks_proxy=True, want_requeue=True),
    Case("waits to scale to zero after idle period (custom PA window)", 1, 0, 0, False, ACTIVE,
         PA_STABLE_WINDOW, settings={"stable_window": PA_STABLE_WINDOW}),
    Case("can scale to zero after grace period, but 0 PA retention", 1, 0, 0, True, INACTIVE, GRACE,
         settings={"scale_to_zero_pod_retention": 0.0}),
    Case("can't scale to zero after grace period, but before last pod retention", 1, 0, 0, False, INACTIVE,
         GRACE, settings={"scale_to_zero_pod_retention": 2 * GRACE}, want_requeue=True),
    Case("can't scale to zero after grace period, but before last pod retention, pa defined", 1, 0, 0, False,
         INACTIVE, GRACE, settings={"scale_to_zero_pod_retention": 2 * GRACE}, want_requeue=True),
    Case("scale to zero after grace period, and after last pod retention", 1, 0, 0, True, INACTIVE, GRACE,
         settings={"scale_to_zero_pod_retention": GRACE}),
    Case("scale to zero after grace period", 1, 0, 0, True, INACTIVE, GRACE),
    Case("waits to scale to zero (just before grace period)", 1, 0, 0, False, INACTIVE, GRACE - 1,
         want_requeue=True),
    Case("waits to scale to zero (just before grace period, sks short)", 1, 0, 0, False, INACTIVE, GRACE - 1,
         proxy_for=GRACE - 1, want_requeue=True),
    Case("waits to scale to zero (just before grace period, sks in proxy long) and last pod timeout positive",
         1, 0, 0, True, INACTIVE, GRACE - 1, settings={"scale_to_zero_pod_retention": 42.0}, proxy_for=GRACE),
    Case("waits to scale to zero (just before grace period, sks in proxy long)", 1, 0, 0, True, INACTIVE,
         GRACE - 1, proxy_for=GRACE),
    Case("scale to zero with TBC=-1", 1, 0, 0, True, INACTIVE, GRACE, activator_in_path=False,
         settings={"activator_always_in_path": True}),
    Case("scale to zero after grace period, but fail prober", 1, 0, 0, False, INACTIVE, GRACE,
         activator_in_path=False, want_probe=True),
    Case("scale to zero after grace period, but wrong prober response", 1, 0, 0, False, INACTIVE, GRACE,
         activator_in_path=False, want_probe=True),
    Case("waits to scale to zero while activating until after deadline exceeded", 1, 0, -1, False, ACTIVATING,
         ACTIVATION_TIMEOUT / 2, want_requeue=True),
    Case("scale to zero while activating after deadline exceeded", 1, 0, 0, True, ACTIVATING,
         ACTIVATION_TIMEOUT + 1),
    Case("scale to zero while activating after revision deadline exceeded", 1, 0, 0, True, ACTIVATING,
         5 + 30 + 1, settings={"activation_timeout": 5 + 30.0}),
    Case("scale down to minScale before grace period", 10, 0, 2, True, INACTIVE, GRACE - 1, min_scale=2),
    Case("scale down to minScale after grace period", 10, 0, 2, True, INACTIVE, GRACE, min_scale=2),
    Case("ignore minScale if unreachable", 10, 0, 0, True, INACTIVE, GRACE, min_scale=2,
         settings={"reachable": False}),
    Case("observe minScale if reachability unknown", 10, 0, 2, True, INACTIVE, GRACE, min_scale=2),
    Case("scales up", 1, 10, 10, True),
    Case("scales up to maxScale", 1, 10, 8, True, max_scale=8),
    Case("scale up inactive revision", 1, 10, 10, True, INACTIVE, GRACE / 2),
    Case("does not scale up from zero with no metrics", 0, -1, -1, False, INACTIVE, 0),
    Case("scales up from zero to desired one", 0, 1, 1, True),
    Case("scales up from zero to desired high scale", 0, 10, 10, True),
    Case("negative scale does not scale", 12, -1, -1, False, ACTIVE, 0),
    Case("initial scale attained, but now time to scale down", 2, 0, 1, True, ACTIVE, 120, initialized=True,
         settings={"initial_scale": 2}, want_requeue=True),
    Case("haven't scaled to initial scale, override desired scale with initial scale", 0, 1, 2, True,
         settings={"initial_scale": 2}),
    Case("initial scale reached for the first time", 5, 1, 5, False, settings={"initial_scale": 5}),
    Case("reaching initial scale zero", 0, 0, 0, False, INACTIVE, 0, settings={"initial_scale": 0},
         want_requeue=True),
    # TestDisableScaleToZero: an Active, reachable PA with enable-scale-to-zero false.
    Case("EnableScaleToZero == false and minScale == 0", 10, 0, 1, True, ACTIVE, 0,
         settings={"enable_scale_to_zero": False}),
    Case("EnableScaleToZero == false and minScale == 2", 10, 0, 2, True, ACTIVE, 0, min_scale=2,
         settings={"enable_scale_to_zero": False}),
    Case("EnableScaleToZero == false and desire pod is -1(initial value)", 10, -1, -1, False, ACTIVE, 0,
         settings={"enable_scale_to_zero": False}),
]  # fmt: skip


@pytest.mark.parametrize("case", CASES, ids=[c.label for c in CASES])
def test_scaler_case(case: Case):
    settings = LifecycleSettings(
        min_scale=case.min_scale,
        max_scale=case.max_scale,
        stable_window=STABLE_WINDOW,
        scale_to_zero_grace_period=GRACE,
        activation_timeout=ACTIVATION_TIMEOUT,
    )
    settings = replace(settings, **case.settings)
    status = PAStatus(case.state, NOW - case.age, scale_target_initialized=case.initialized)
    outcome = scale_target(
        settings,
        status,
        NOW,
        case.scale_to,
        activator_in_path=case.activator_in_path,
        proxy_since=None if case.proxy_for is None else NOW - case.proxy_for,
        proxied=case.sks_proxy,
    )
    assert outcome.desired == case.want_replicas
    patched = outcome.apply and outcome.desired != case.start_replicas
    assert patched is case.want_scaling
    assert (outcome.requeue_after is not None) is case.want_requeue
    assert outcome.probe_activator is case.want_probe


def test_the_two_scaler_tables_are_fully_modelled():
    assert len(CASES) == 37 + 3


# -- the life cycle over time --------------------------------------------------------------------------

T0 = 1_000_000.0


def run(lifecycle: Lifecycle, now: float, desired: int, ebc: int = 0, ready: int = 1, in_path: bool = True):
    return lifecycle.step(now, desired, ebc, ready, activator_in_path=in_path)


def test_new_revision_activates_then_becomes_active_when_a_pod_is_ready():
    lc = Lifecycle(LifecycleSettings(), T0)
    step = run(lc, T0, -1, ebc=-111, ready=0)
    assert (step.want, step.apply, step.state, step.mode) == (-1, False, ACTIVATING, PROXY)
    step = run(lc, T0 + 5, -1, ebc=-111, ready=1)
    assert (step.state, step.mode) == (ACTIVE, PROXY)
    assert lc.status.scale_target_initialized


def test_idle_revision_goes_to_zero_one_step_at_a_time():  # §9.18
    s = LifecycleSettings(stable_window=60, scale_to_zero_grace_period=30)
    lc = Lifecycle(s, T0)
    run(lc, T0, 3, ready=3)  # active, serving (EBC 0)
    assert lc.status.state == ACTIVE and lc.mode == SERVE
    # The decider wants zero 20 s after activation: one pod for the remaining 40 s.
    step = run(lc, T0 + 20, 0, ready=3)
    assert (step.want, step.apply, step.requeue_after, step.state) == (1, True, 40, ACTIVE)
    assert step.mode == SERVE
    # A stable window after activation: not applied, but the PA turns Inactive and the activator steps in.
    step = run(lc, T0 + 60, 0, ready=1)
    assert (step.want, step.apply, step.state, step.mode) == (0, False, INACTIVE, PROXY)
    # Inactive, proxied only just now: wait out the grace period behind the activator.
    step = run(lc, T0 + 62, 0, ready=1)
    assert (step.want, step.apply) == (0, False)
    assert step.requeue_after == pytest.approx(28)
    step = run(lc, T0 + 90, 0, ready=1)
    assert (step.want, step.apply, step.reason) == (0, True, "scale to zero after grace period")


def test_long_proxied_revision_takes_the_fast_path_to_zero():
    lc = Lifecycle(LifecycleSettings(stable_window=60, scale_to_zero_grace_period=30), T0)
    run(lc, T0, 1, ebc=-100, ready=1)  # EBC < 0: proxied from the start
    run(lc, T0 + 60, 0, ebc=-100, ready=1)  # deactivate
    step = run(lc, T0 + 61, 0, ebc=-100, ready=1)
    assert (step.apply, step.reason) == (True, "scale to zero: proxied for the grace period")


def test_scale_to_zero_waits_for_the_activator_in_the_path():
    lc = Lifecycle(LifecycleSettings(stable_window=60, scale_to_zero_grace_period=30), T0)
    run(lc, T0, 1, ebc=-100)
    run(lc, T0 + 60, 0, ebc=-100)
    step = run(lc, T0 + 200, 0, ebc=-100, in_path=False)
    assert (step.apply, step.probe_activator) == (False, True)


def test_traffic_while_inactive_reactivates():
    lc = Lifecycle(LifecycleSettings(stable_window=60), T0)
    run(lc, T0, 1)
    run(lc, T0 + 60, 0)
    assert lc.status.state == INACTIVE
    step = run(lc, T0 + 70, 2, ready=0)
    assert (step.want, step.apply, step.state, step.mode) == (2, True, ACTIVATING, PROXY)
    step = run(lc, T0 + 75, 2, ready=2)
    assert (step.state, step.mode) == (ACTIVE, SERVE)
    assert lc.status.since == T0 + 75


@pytest.mark.parametrize(
    ("label", "want", "ebc", "ready", "state", "mode"),
    named(
        [
            ("pods and spare burst capacity serve directly", 3, 0, 3, ACTIVE, SERVE),
            ("short burst capacity keeps the activator in the path", 3, -1, 3, ACTIVE, PROXY),
            ("no ready pod forces proxy", 3, 5, 0, ACTIVE, PROXY),
            ("zero keeps the activator in the path", 0, 5, 1, INACTIVE, PROXY),
            ("unknown scale of an active revision keeps serving", -1, 5, 2, ACTIVE, SERVE),
            ("unknown scale of an inactive revision stays proxied", -1, 5, 2, INACTIVE, PROXY),
        ]
    ),
)
def test_serve_or_proxy(label, want, ebc, ready, state, mode):  # §1.5, §6.3
    lc = Lifecycle(LifecycleSettings(), T0, status=PAStatus(state, T0 - 1000, scale_target_initialized=True))
    assert run(lc, T0 + 1, want, ebc=ebc, ready=ready).mode == mode, label


def test_activation_timeout_marks_the_revision_inactive_timed_out():
    lc = Lifecycle(LifecycleSettings(activation_timeout=35), T0)
    run(lc, T0, -1, ready=0)
    step = run(lc, T0 + 36, -1, ready=0)
    assert (step.want, step.apply, step.state) == (0, True, INACTIVE)
    assert lc.status.reason == "TimedOut"


def test_initial_scale_is_the_floor_until_first_reached():
    lc = Lifecycle(LifecycleSettings(initial_scale=3), T0)
    step = run(lc, T0, 1, ready=0)
    assert (step.want, step.state) == (3, ACTIVATING)
    step = run(lc, T0 + 5, 1, ready=3)
    assert step.state == ACTIVE
    assert run(lc, T0 + 7, 1, ready=3).want == 1  # initialized: the floor is gone


def test_zero_initial_scale_starts_inactive():
    lc = Lifecycle(LifecycleSettings(initial_scale=0), T0)
    step = run(lc, T0, -1, ready=0)
    assert (step.state, step.mode) == (INACTIVE, PROXY)
