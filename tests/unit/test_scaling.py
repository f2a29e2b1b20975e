"""The KPA decision (autoscaler.scaling), pinned to Knative's autoscaler_test.go expectations.

Knative's tests build specs with ``TotalValue = TargetValue / 0.75`` and rates of 10; ``spec_for`` does
the same so the expected numbers read exactly as theirs. Section 9 items of the reference are cited.
"""

import math

import pytest
from tables import named

from autoscaler.scaling import Autoscaler, DeciderSpec, ScaleResult

UTILIZATION = 0.75
T0 = 1_000_000.0  # an even epoch second, so delay-window indexes are easy to read


def spec_for(target: float, tbc: float, **changes) -> DeciderSpec:
    fields = dict(
        scaling_metric="concurrency",
        target_value=target,
        total_value=target / UTILIZATION,
        target_burst_capacity=tbc,
        panic_threshold=2.0,
        max_scale_up_rate=10.0,
        max_scale_down_rate=10.0,
        activator_capacity=150.0,
        stable_window=60.0,
    )
    fields.update(changes)
    return DeciderSpec(**fields)


def expected_ebc(target: float, tbc: float, panic: float, ready: int) -> int:
    return math.floor(target / UTILIZATION * ready - tbc - panic)


def test_defaults_are_knatives_for_container_concurrency_zero():
    spec = DeciderSpec()
    assert (spec.target_value, spec.total_value, spec.target_burst_capacity) == (70.0, 100.0, 211.0)
    assert (spec.max_scale_up_rate, spec.max_scale_down_rate, spec.panic_threshold) == (1000.0, 2.0, 2.0)
    assert (spec.stable_window, spec.scale_down_delay, spec.reachable) == (60.0, 0.0, True)


@pytest.mark.parametrize(
    ("label", "target", "tbc", "stable", "panic", "ready", "changes", "want_pods", "want_ebc"),
    named(
        [
            ("stable mode keeps five pods for fifty at target ten", 10, 100, 50, 50, 1, {}, 5, None),
            ("unlimited TBC gives EBC -1", 181, -1, 21, 26, 1, {}, 1, -1),
            ("zero TBC gives EBC 0", 10, 0, 50, 49, 1, {}, 5, 0),
            ("already scaled stays", 10, 100, 50, 50, 5, {}, 5, None),
            # §9.2: ceil(1.1 * 2) = 3 lets a conservative rate still grow by one pod.
            (
                "small scale-up rate still grows by one pod",
                1,
                1982,
                3,
                3.1,
                2,
                {"max_scale_up_rate": 1.1},
                3,
                None,
            ),
            # §9.2: floor(100 / 1.1) = 90.
            (
                "small scale-down rate floors the drop",
                10,
                1982,
                1,
                1,
                100,
                {"max_scale_down_rate": 1.1},
                90,
                None,
            ),
            # §9.8: an unreachable revision may drop to anything.
            (
                "unreachable revision ignores the scale-down rate",
                10,
                1982,
                1,
                1,
                100,
                {"max_scale_down_rate": 1.1, "reachable": False},
                1,
                None,
            ),
            ("panic concurrency takes precedence when it doubles", 10, 84, 50, 100, 1, {}, 10, None),
            ("rate limit caps scale-up at ten times", 10, 61, 1000, 1001, 1, {}, 10, None),
            ("rate limit caps scale-down at a tenth", 10, 61, 1, 1, 100, {}, 10, None),
            # §9.1: zero ready pods -> rates use one pod, EBC uses zero.
            ("zero ready pods use one pod for rates but zero for EBC", 10, 81, 1000, 888, 0, {}, 10, None),
            ("no traffic wants zero pods", 10, 75, 0, 0, 1, {}, 0, None),
        ]
    ),
)
def test_one_decision_matches_knative(label, target, tbc, stable, panic, ready, changes, want_pods, want_ebc):
    scaler = Autoscaler(spec_for(target, tbc, **changes), T0, ready_pods=1)
    result = scaler.scale(T0, ready, stable, panic)
    ebc = expected_ebc(target, tbc, panic, ready) if want_ebc is None else want_ebc
    assert result == ScaleResult(desired_pods=want_pods, excess_burst_capacity=ebc, valid=True), label


# Knative's multi-step autoscaler_test.go cases, named after their Go tests. Each step is
# (seconds after creation, ready pods, stable, panic, desired pods); the EBC is checked too. As in
# Knative's helper, the decider is created with one ready pod (so it does not start in panic).
KNATIVE_SEQUENCES = [
    ("TestAutoscalerStableModeIncreaseWithConcurrencyDefault", 10, 101, "concurrency",
     [(0, 1, 50, 10, 5), (0, 1, 100, 10, 10)]),
    ("TestAutoscalerStableModeIncreaseWithRPS", 10, 101, "rps", [(0, 1, 50, 50, 5), (0, 1, 100, 99, 10)]),
    ("TestAutoscalerMetricsWithRPS: still over the threshold a stable window later", 10, 100, "rps",
     [(0, 1, 100, 99, 10), (61, 1, 100, 99, 10)]),
    ("TestAutoscalerStableModeDecrease", 10, 98, "concurrency", [(0, 8, 100, 100, 10), (0, 8, 50, 50, 5)]),
    ("TestAutoscalerStableModeNoTrafficScaleToZero", 10, 75, "concurrency",
     [(0, 1, 1, 0, 1), (0, 1, 0, 0, 0)]),
    ("AutoscalerNoDataAtZeroNoAutoscale", 10, 100, "concurrency", [(0, 1, 0, 0, 0)]),
    ("TestAutoscalerRateLimitScaleUp: ten times per step", 10, 61, "concurrency",
     [(0, 1, 1000, 1001, 10), (0, 10, 1000, 1001, 100)]),
    ("TestAutoscalerRateLimitScaleDown: a tenth per step", 10, 61, "concurrency",
     [(0, 100, 1, 1, 10), (0, 10, 1, 1, 1)]),
    ("TestAutoscalerPanicThenUnPanicScaleDown", 10, 93, "concurrency",
     [(0, 1, 100, 100, 10), (0, 10, 100, 1000, 100), (30, 10, 1, 1, 100), (61, 10, 1, 1, 1)]),
]  # fmt: skip


@pytest.mark.parametrize(("label", "target", "tbc", "metric", "steps"), named(KNATIVE_SEQUENCES))
def test_decision_sequences_match_knative(label, target, tbc, metric, steps):
    scaler = Autoscaler(spec_for(target, tbc, scaling_metric=metric), T0, ready_pods=1)
    for at, ready, stable, panic, want in steps:
        result = scaler.scale(T0 + at, ready, stable, panic)
        want_result = ScaleResult(want, expected_ebc(target, tbc, panic, ready), True)
        assert result == want_result, (label, at, ready, stable, panic)


@pytest.mark.parametrize(
    ("label", "stable", "panic", "want"),
    named(
        [
            # §9.6: the panic decision is max(stable, panic).
            ("stable larger than panic wins while panicking", 50, 30, 50),
            ("panic larger than stable wins while panicking", 20, 30, 30),
        ]
    ),
)
def test_panic_uses_the_larger_of_stable_and_panic(label, stable, panic, want):
    scaler = Autoscaler(spec_for(1, 100), T0, ready_pods=5)  # starts in panic (ready > 1)
    assert scaler.panicking
    assert scaler.scale(T0 + 5, 5, stable, panic).desired_pods == want, label


@pytest.mark.parametrize(
    ("label", "ready", "stable", "panic"),
    named(
        [
            ("unknown ready count", None, 10.0, 10.0),
            ("no stable value", 1, None, 10.0),
            ("no panic value", 1, 10.0, None),
        ]
    ),
)
def test_unavailable_input_gives_an_invalid_result(label, ready, stable, panic):
    scaler = Autoscaler(spec_for(10, 81), T0, ready_pods=1)
    assert scaler.scale(T0, ready, stable, panic) == ScaleResult(0, 0, False), label


def test_panic_never_scales_down():  # §9.5
    scaler = Autoscaler(spec_for(10, 93), T0, ready_pods=1)
    assert scaler.scale(T0, 1, 100, 100).desired_pods == 10
    assert scaler.scale(T0 + 1, 10, 100, 1000).desired_pods == 100
    assert scaler.panicking
    # Traffic fell away: still panicking, still 100.
    assert scaler.scale(T0 + 31, 10, 1, 1).desired_pods == 100
    # A stable window after the last crossing the panic ends; the drop is rate-limited (10 -> 1).
    assert scaler.scale(T0 + 62, 10, 1, 1).desired_pods == 1
    assert not scaler.panicking


def test_panic_ends_only_strictly_after_a_stable_window():  # §9.4
    scaler = Autoscaler(spec_for(10, 0), T0, ready_pods=1)
    scaler.scale(T0, 1, 10, 100)  # 10 panic pods on 1 ready: over 200 %
    assert scaler.panicking
    scaler.scale(T0 + 60, 10, 10, 10)  # exactly one window later: not yet
    assert scaler.panicking
    scaler.scale(T0 + 60.001, 10, 10, 10)
    assert not scaler.panicking


def test_crossing_the_threshold_again_restarts_the_panic_clock():  # §9.4
    scaler = Autoscaler(spec_for(1, 98), T0, ready_pods=1)
    scaler.scale(T0, 10, 11, 25)
    assert scaler.scale(T0 + 30, 40, 30, 80).desired_pods == 80  # still surging: 80/40 >= 2
    assert scaler.scale(T0 + 62, 55, 50, 56).desired_pods == 80  # 30 + 60 > 62: still panicking
    assert scaler.panicking


def test_slow_increase_unpanics_after_a_stable_window():
    scaler = Autoscaler(spec_for(1, 98), T0, ready_pods=1)
    assert scaler.scale(T0, 10, 11, 25).desired_pods == 25
    assert scaler.scale(T0 + 30, 40, 30, 41).desired_pods == 41  # 41/40 < 2: no new crossing
    assert scaler.scale(T0 + 62, 55, 50, 56).desired_pods == 50
    assert not scaler.panicking


def test_rate_limited_panic_still_counts_as_panic():  # §9.3
    scaler = Autoscaler(spec_for(1, 0, max_scale_up_rate=2.0), T0, ready_pods=1)
    result = scaler.scale(T0, 4, 4, 100)  # wants 100, may reach 8
    assert result.desired_pods == 8
    assert scaler.panicking


def test_exponential_panic_tracks_demand():
    scaler = Autoscaler(spec_for(1, 101), T0, ready_pods=1)
    for ready, load in ((1, 6), (6, 36), (36, 216), (216, 1296), (1296, 1296)):
        assert scaler.scale(T0, ready, load, load).desired_pods == load


@pytest.mark.parametrize(
    ("ready", "panicking", "max_panic_pods"),
    [(0, False, 0), (1, False, 1), (2, True, 2)],
    ids=["0-ready", "1-ready", "2-ready"],
)
def test_autoscaler_starts_in_panic_only_above_one_ready_pod(ready, panicking, max_panic_pods):  # §9.10
    scaler = Autoscaler(spec_for(100, 11, total_value=120, panic_threshold=2.2), T0, ready_pods=ready)
    assert scaler.panicking is panicking
    # The remembered panic pod count is the creation-time ready count: it holds the scale while panicking.
    assert scaler.scale(T0 + 1, ready, 0, 0).desired_pods == (max_panic_pods if panicking else 0)


def test_unknown_ready_count_at_creation_counts_as_zero():
    scaler = Autoscaler(spec_for(100, 11), T0, ready_pods=None)
    assert not scaler.panicking


def test_restart_never_scales_down_for_a_stable_window():  # §9.10
    scaler = Autoscaler(spec_for(10, 0, max_scale_down_rate=2.0), T0, ready_pods=8)
    assert scaler.scale(T0 + 2, 8, 0, 0).desired_pods == 8
    assert scaler.scale(T0 + 60, 8, 0, 0).desired_pods == 8
    assert scaler.scale(T0 + 62, 8, 0, 0).desired_pods == 4  # then down, at the rate limit (8 / 2)


@pytest.mark.parametrize(
    ("label", "stable", "panic", "want"),
    named(
        [
            # §9.7: activation scale lifts any non-zero wish, and leaves zero alone.
            ("one pod of demand is lifted to activation scale", 5, 5, 3),
            ("zero demand stays at zero", 0, 0, 0),
            ("demand above activation scale is untouched", 50, 50, 5),
        ]
    ),
)
def test_activation_scale_is_a_minimum_non_zero_scale(label, stable, panic, want):
    scaler = Autoscaler(spec_for(10, 0, activation_scale=3, panic_threshold=100), T0, ready_pods=1)
    assert scaler.scale(T0, 1, stable, panic).desired_pods == want, label


def test_activation_scale_judges_the_unclamped_count():  # §9.7
    # Stable 0.5 at target 10 -> ceil = 1 pod > 0 -> lifted to 4.
    spec = spec_for(10, 0, activation_scale=4, panic_threshold=100)
    scaler = Autoscaler(spec, T0, ready_pods=1)
    assert scaler.scale(T0, 1, 0.5, 0).desired_pods == 4


# Knative's TestAutoscalerScaleDownDelay and ...DelayZero, spec for spec: TotalValue, TargetBurstCapacity
# and StableWindow are left unset (0) there, and no pod is ever ready; Reachable is set since Knative
# ignores the delay for unreachable revisions (knative/serving#15831).
KNATIVE_DELAY_SPEC = dict(
    target_value=10.0,
    total_value=0.0,
    target_burst_capacity=0.0,
    stable_window=0.0,
    panic_threshold=100.0,
    max_scale_up_rate=10.0,
    max_scale_down_rate=10.0,
)


@pytest.mark.parametrize(
    ("label", "delay", "steps"),
    named(
        [
            (
                "simple: held for five minutes, dropped two seconds later",  # §9.9: 150 two-second buckets
                300.0,
                [(2, 40, 4), (300, 0, 4), (302, 0, 0)],
            ),
            (
                "gradual: the largest value dominates until it scrolls out",
                300.0,
                [
                    (2, 40, 4),
                    (300, 0, 4),
                    (302, 0, 0),
                    (540, 40, 4),
                    (600, 30, 4),
                    (660, 0, 4),
                    (840, 0, 3),
                    (900, 0, 0),
                ],
            ),
            ("zero delay scales down at once, even within one bucket", 0.0, [(0, 40, 4), (0.5, 20, 2)]),
        ]
    ),
)
def test_scale_down_delay_matches_knative(label, delay, steps):  # TestAutoscalerScaleDownDelay
    scaler = Autoscaler(DeciderSpec(**KNATIVE_DELAY_SPEC, scale_down_delay=delay), 0.0, ready_pods=0)
    for at, concurrency, want in steps:
        result = scaler.scale(at, 0, concurrency, concurrency)
        assert result == ScaleResult(desired_pods=want, excess_burst_capacity=0, valid=True), (label, at)


def test_zero_total_value_is_accepted_and_gives_zero_capacity():
    """Knative leaves TotalValue 0 in its delay tests; with TBC > 0 the EBC is just -TBC - panic."""
    spec = DeciderSpec(**{**KNATIVE_DELAY_SPEC, "target_burst_capacity": 10.0})
    assert Autoscaler(spec, 0.0, ready_pods=0).scale(0, 3, 5, 5.5) == ScaleResult(1, -16, True)


def test_delay_window_exists_only_if_configured_at_creation():  # §9.9
    scaler = Autoscaler(spec_for(10, 0, panic_threshold=100), 0.0, ready_pods=0)
    scaler.update(spec_for(10, 0, panic_threshold=100, scale_down_delay=300))
    assert scaler.scale(2, 0, 40, 40).desired_pods == 4
    assert scaler.scale(4, 0, 0, 0).desired_pods == 0


def test_unreachable_revision_bypasses_the_delay_window():  # §9.8
    scaler = Autoscaler(spec_for(10, 0, panic_threshold=100, scale_down_delay=300), 0.0, ready_pods=0)
    assert scaler.scale(2, 0, 40, 40).desired_pods == 4
    scaler.update(spec_for(10, 0, panic_threshold=100, scale_down_delay=300, reachable=False))
    assert scaler.scale(4, 0, 0, 0).desired_pods == 0


def test_update_replaces_the_target_and_keeps_panic_state():
    scaler = Autoscaler(spec_for(10, 77), T0, ready_pods=1)
    assert scaler.scale(T0, 1, 100, 101).desired_pods == 10
    scaler.update(spec_for(1, 71, activator_capacity=21))
    result = scaler.scale(T0, 10, 100, 101)
    assert result == ScaleResult(100, expected_ebc(1, 71, 101, 10), True)
    assert scaler.panicking  # 101 / 10 >= 2 under the new target


def test_rps_metric_divides_by_the_rps_target():
    scaler = Autoscaler(spec_for(10, 100, scaling_metric="rps"), T0, ready_pods=1)
    assert scaler.scale(T0, 1, 100, 99).desired_pods == 10


@pytest.mark.parametrize(
    ("field", "value"),
    named(
        [
            ("target_value", 0.0),
            ("target_value", math.nan),
            ("total_value", -1.0),
            ("stable_window", -1.0),
            ("max_scale_down_rate", 0.0),
            ("target_burst_capacity", -2.0),
            ("scale_down_delay", -1),
        ],
        lambda field, value: f"{field}={value}",
    ),
)
def test_spec_rejects_values_that_would_break_the_arithmetic(field, value):
    with pytest.raises(ValueError, match=field):
        DeciderSpec(**{field: value})
