"""The composition (autoscaler.revision): settings resolution and a revision's decisions over time.

Items of the reference's section 9 that are about the queue-proxy and activator data path (19, 20)
are pinned by those components' tests; the rest are cited where they are exercised end to end.
"""

import pytest

from autoscaler.config import AutoscalerConfigError, parse_config
from autoscaler.revision import RevisionAutoscaler, ScaleDecision, settings_from
from autoscaler.scaling import DeciderSpec
from autoscaler.stat import Stat

A = "autoscaling.knative.dev/"
T0 = 1_000_000.0


def load(concurrency: float = 0.0, requests: float = 0.0, name: str = "pod") -> Stat:
    return Stat(name, average_concurrent_requests=concurrency, request_count=requests)


def test_default_settings_are_knatives():
    s = settings_from()
    assert s.spec == DeciderSpec()
    assert (s.stable_window, s.panic_window, s.initial_scale, s.min_scale, s.max_scale) == (60, 6, 1, 0, 0)
    assert (s.aggregation, s.has_scrape_target, s.activation_timeout) == ("linear", True, 630)
    assert (s.enable_scale_to_zero, s.scale_to_zero_grace_period, s.scale_to_zero_pod_retention) == (
        True,
        30,
        0,
    )


def test_annotations_and_config_flow_into_the_settings():
    s = settings_from(
        {
            A + "metric": "rps",
            A + "target": "50",
            A + "window": "2m",
            A + "panic-window-percentage": "20",
            A + "panicThresholdPercentage": "300",
            A + "target-burst-capacity": "-1",
            A + "minScale": "1",
            A + "max-scale": "9",
            A + "initial-scale": "2",
            A + "activation-scale": "2",
            A + "scale-down-delay": "30s",
            A + "scale-to-zero-pod-retention-period": "1m",
            A + "metric-aggregation-algorithm": "weighted-exponential",
            "serving.knative.dev/progress-deadline": "100s",
        },
        {"max-scale-up-rate": "5", "activator-capacity": "50", "scale-to-zero-grace-period": "45s"},
        container_concurrency=10,
        reachable=False,
    )
    assert s.spec == DeciderSpec(
        scaling_metric="rps",
        target_value=35.0,
        total_value=50.0,
        target_burst_capacity=-1,
        panic_threshold=3.0,
        max_scale_up_rate=5,
        max_scale_down_rate=2,
        activator_capacity=50,
        stable_window=120,
        scale_down_delay=30,
        activation_scale=2,
        reachable=False,
    )
    assert (s.panic_window, s.min_scale, s.max_scale, s.initial_scale) == (24, 1, 9, 2)
    assert (s.has_scrape_target, s.aggregation, s.scale_to_zero_pod_retention) == (
        False,
        "weighted-exponential",
        60,
    )
    assert (s.scale_to_zero_grace_period, s.activation_timeout, s.container_concurrency) == (45, 130, 10)


def test_an_already_parsed_config_is_accepted():
    cfg = parse_config({"stable-window": "30s"})
    assert settings_from(config=cfg).panic_window == 3


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"annotations": {A + "target": "abc"}},
            'annotation autoscaling.knative.dev/target="abc": not a number',
        ),
        ({"config": {"stable-window": "1s"}}, 'config-autoscaler stable-window="1s": must be in [6s, 1h]'),
        ({"container_concurrency": -1}, "containerConcurrency=-1: must be in [0, 1000]"),
        ({"container_concurrency": 1001}, "containerConcurrency=1001"),
        ({"container_concurrency": 2.5}, "containerConcurrency=2.5: must be an integer"),
    ],
    ids=["bad-annotation", "bad-config", "cc-negative", "cc-too-big", "cc-fraction"],
)
def test_bad_settings_are_rejected_with_a_clear_error(kwargs, message):
    with pytest.raises(AutoscalerConfigError) as err:
        settings_from(**kwargs)
    assert message in str(err.value)


@pytest.mark.parametrize(
    ("annotations", "want"),
    [({}, 100 - 211), ({A + "target-burst-capacity": "0"}, 0), ({A + "target-burst-capacity": "-1"}, -1),
     ({A + "initial-scale": "3"}, 300 - 211)],
    ids=["default-tbc", "tbc-0", "tbc-unlimited", "initial-scale-3"],
)  # fmt: skip
def test_initial_excess_burst_capacity(annotations, want):  # §1.4
    assert settings_from(annotations).initial_excess_burst_capacity == want


def test_new_revision_has_unknown_scale_and_no_data():
    rev = RevisionAutoscaler(settings_from(), T0, ready_pods=0)
    assert rev.desired_scale == -1
    d = rev.decide(T0, ready_pods=0)
    assert isinstance(d, ScaleDecision)
    assert (d.valid, d.desired_pods, d.apply, d.mode, d.state) == (False, -1, False, "proxy", "activating")
    assert d.excess_burst_capacity == 100 - 211


def test_no_data_keeps_the_last_desired_scale():  # §9.11
    rev = RevisionAutoscaler(settings_from(), T0, ready_pods=1)
    rev.record(load(140), T0)
    assert rev.decide(T0, 1).desired_pods == 2
    d = rev.decide(T0 + 62, 2)  # the stable window emptied: no new opinion
    assert (d.valid, rev.desired_scale) == (False, 2)


def test_unlimited_burst_capacity_without_stats_is_a_valid_zero():  # §9.11: no scrape target
    rev = RevisionAutoscaler(settings_from({A + "target-burst-capacity": "-1"}), T0, ready_pods=0)
    d = rev.decide(T0, 0)
    assert (d.valid, rev.desired_scale, d.excess_burst_capacity, d.mode) == (True, 0, -1, "proxy")


def test_unknown_ready_count_changes_nothing():
    rev = RevisionAutoscaler(settings_from(), T0, ready_pods=1)
    rev.record(load(140), T0)
    rev.decide(T0, 1)
    d = rev.decide(T0 + 2, None)
    assert (d.valid, d.apply, d.desired_pods, d.reason) == (
        False,
        False,
        2,
        "ready pod count unknown: no change",
    )


def test_poke_when_scaled_to_zero_or_unknown_and_the_stat_carries_concurrency():  # §9.17, §6.4
    rev = RevisionAutoscaler(settings_from({A + "target-burst-capacity": "-1"}), T0, ready_pods=0)
    # Deliberately unlike Knative (whose multiscaler pokes only at a known 0): an unknown scale (-1)
    # decides at once too, so a never-active revision's first request does not wait for a tick.
    assert rev.desired_scale == -1
    assert rev.record(load(0, requests=3), T0) is False  # no concurrency: nothing to wake up for
    assert rev.record(load(1), T0) is True
    rev.decide(T0 + 100, 0)  # window empty, no scrape target: a valid 0
    assert rev.desired_scale == 0
    assert rev.record(load(0, requests=3), T0 + 101) is False
    assert rev.record(load(1, name="activator"), T0 + 101) is True
    rev.decide(T0 + 101, 0)
    assert rev.desired_scale == 1
    assert rev.record(load(5, name="activator"), T0 + 102) is False  # scaled up: the tick decides


def test_never_active_revision_scales_from_zero_on_its_first_stat():  # issue 11 item 9
    """Initial scale 0, no decision yet (-1): the activator's first-request stat decides 1 pod at once."""
    settings = settings_from({A + "initial-scale": "0"}, {"allow-zero-initial-scale": "true"})
    rev = RevisionAutoscaler(settings, T0, ready_pods=0)
    d = rev.decide(T0 + 2, 0)  # the first tick: no stats at all
    assert (d.valid, d.desired_pods, d.apply, d.state) == (False, -1, False, "inactive")
    assert rev.record(load(1, name="activator"), T0 + 2.5) is True
    d = rev.decide(T0 + 2.5, 0)
    assert (d.valid, d.desired_pods, d.apply, d.mode) == (True, 1, True, "proxy")


def test_scale_from_zero_on_the_first_request():  # §6.4, §9.1, §9.14
    rev = RevisionAutoscaler(settings_from(), T0, ready_pods=0)
    rev.record(load(0), T0)
    assert rev.decide(T0, 0).apply is False  # the decider wants 0; an activating PA waits
    assert rev.desired_scale == 0
    # The activator's first-request stat pokes the decider; its next periodic report subtracts that
    # request again (max(1 - 1, 0)), and both land in the same second.
    assert rev.record(load(1, name="activator"), T0 + 3.1) is True
    rev.record(load(0, name="activator"), T0 + 3.9)
    d = rev.decide(T0 + 3.9, 0)
    assert (d.desired_pods, d.apply, d.mode, d.state) == (1, True, "proxy", "activating")


def test_burst_panics_and_scales_out_then_holds():  # §9.5
    rev = RevisionAutoscaler(settings_from({A + "target": "10"}), T0, ready_pods=1)  # target value 7
    for t in range(10):
        rev.record(load(5), T0 + t)
    d = rev.decide(T0 + 9, 1)
    assert (d.desired_pods, d.panicking) == (1, False)
    for t in range(10, 14):
        rev.record(load(70), T0 + t)
    d = rev.decide(T0 + 13, 1)
    # Panic window (6 s): (2·5 + 4·70) / 6 = 48.3 -> 7 pods, 7x the one ready pod.
    assert (d.panic, d.desired_pods, d.panicking) == (pytest.approx(48.333333), 7, True)
    for t in range(14, 20):
        rev.record(load(0), T0 + t)
    assert rev.decide(T0 + 19, 7).desired_pods == 7  # never scales down while panicking


def test_idle_revision_scales_to_zero_through_the_life_cycle():  # §9.18 end to end
    rev = RevisionAutoscaler(settings_from({A + "target-burst-capacity": "0"}), T0, ready_pods=1)
    for t in range(4):
        rev.record(load(3), T0 + t)
    d = rev.decide(T0 + 3, 1)
    assert (d.desired_pods, d.state, d.mode) == (1, "active", "serve")  # active since T0+3
    ready, log = 1, []
    for t in range(4, 200, 2):
        rev.record(load(0), T0 + t)
        rev.record(load(0), T0 + t + 1)
        d = rev.decide(T0 + t + 1, ready)
        if d.apply:
            ready = d.desired_pods  # an actuator that obeys at once
        log.append((t + 1, d))
    inactive_at = next(t for t, d in log if d.state == "inactive")
    zero_at = next(t for t, d in log if d.apply and d.desired_pods == 0)
    # The load leaves the 60 s window at T0+63 and the PA has been active 60 s: it deactivates (not
    # applied), the activator steps in (proxy), and zero applies after the 30 s grace period.
    assert inactive_at == 63
    assert zero_at == 93
    assert all(d.desired_pods == 1 for t, d in log if t < inactive_at)
    assert [d.mode for t, d in log if t >= inactive_at] == ["proxy"] * len(
        [t for t, _ in log if t >= inactive_at]
    )


def test_changed_flags_a_new_desired_scale_or_an_ebc_sign_flip():  # §9.16
    rev = RevisionAutoscaler(settings_from(), T0, ready_pods=3)
    rev.record(load(10), T0)
    first = rev.decide(T0, 3)  # desired 3 (start-in-panic holds 3), EBC 300 - 211 - 10 >= 0: sign flipped
    assert first.changed and first.excess_burst_capacity == 79 and first.mode == "serve"
    rev.record(load(10), T0 + 2)
    assert not rev.decide(T0 + 2, 3).changed
    rev.record(load(600), T0 + 4)
    flip = rev.decide(T0 + 4, 3)
    assert flip.changed and flip.excess_burst_capacity < 0 and flip.mode == "proxy"


def test_rps_metric_scales_on_requests_per_second():
    rev = RevisionAutoscaler(settings_from({A + "metric": "rps"}), T0, ready_pods=1)
    rev.record(load(concurrency=0, requests=700), T0)
    d = rev.decide(T0, 1)
    assert (d.desired_pods, d.stable) == (5, 700)  # 700 / 140


def test_min_and_max_scale_bound_the_decision():
    rev = RevisionAutoscaler(settings_from({A + "min-scale": "2", A + "max-scale": "4"}), T0, ready_pods=1)
    rev.record(load(0), T0)
    assert rev.decide(T0, 1).desired_pods == 2
    rev.record(load(1000), T0 + 1)
    assert rev.decide(T0 + 1, 2).desired_pods == 4


def test_scale_down_delay_from_the_annotation():  # §9.9
    plain = RevisionAutoscaler(settings_from(), T0, ready_pods=1)
    delayed = RevisionAutoscaler(settings_from({A + "scale-down-delay": "20s"}), T0, ready_pods=1)
    zero_at = {}
    for t in range(150):
        for name, rev in (("plain", plain), ("delayed", delayed)):
            rev.record(load(100 if t < 4 else 0), T0 + t)
            if t % 2:
                rev.decide(T0 + t, 1)
                if rev.desired_scale == 0:
                    zero_at.setdefault(name, t)
    # The plain decider last wanted pods at the tick before its zero; the delayed one keeps that value
    # for 20 s (ten 2-second buckets) after it.
    assert zero_at["delayed"] == (zero_at["plain"] - 2) + 20


def test_update_keeps_panic_and_resizes_windows():
    rev = RevisionAutoscaler(settings_from(), T0, ready_pods=4)  # starts in panic
    rev.record(load(7), T0)
    rev.update(settings_from({A + "window": "30s"}), T0)
    assert rev.panicking
    assert rev.settings.panic_window == 3
    rev.record(load(7), T0 + 1)
    d = rev.decide(T0 + 1, 4)
    # Resizing claims a whole old window as written (Knative ResizeWindow): 14 over the new 30 s and 3 s.
    assert (d.stable, d.panic) == (pytest.approx(14 / 30, abs=1e-6), pytest.approx(14 / 3, abs=1e-6))


def test_weighted_exponential_aggregation_reads_recent_load_faster():
    linear = RevisionAutoscaler(settings_from(), T0, ready_pods=1)
    weighted = RevisionAutoscaler(
        settings_from({A + "metric-aggregation-algorithm": "weighted-exponential"}), T0, 1
    )
    for rev in (linear, weighted):
        for t in range(60):
            rev.record(load(0 if t < 55 else 140), T0 + t)
    assert weighted.decide(T0 + 59, 1).stable > linear.decide(T0 + 59, 1).stable


def test_reconcile_after_pods_leave_keeps_the_last_decision_and_its_rate_limit():
    """Pods leaving between ticks must not let the scale drop by another half (max-scale-down-rate 2)."""
    settings = settings_from({A + "target": "10"}, {"target-burst-capacity": "0"})
    core = RevisionAutoscaler(settings, T0, ready_pods=12)
    now = T0
    for second in range(1, 75):  # quiet load after a restart: panic (start-in-panic) ends after 60 s
        now = T0 + second
        core.record(load(concurrency=7.0), now)
    first = core.decide(now, ready_pods=12)
    assert first.desired_pods == 6  # wants 1, limited to floor(12 / 2)
    again = core.reconcile(now + 0.5, ready_pods=6)
    assert (again.desired_pods, again.valid) == (6, True)
    later = core.decide(now + 2, ready_pods=6)
    assert later.desired_pods == 3  # the next tick may halve again
