"""Properties of the decision core (autoscaler.scaling, autoscaler.revision) on any traffic.

A revision with random (valid) settings is fed random stats, ready counts and activator-probe answers
over a few minutes of simulated time, deciding on ticks and reconciling in between. Whatever happens:

* an applied scale is never negative and stays within min-scale and max-scale (initial scale may
  exceed max-scale until the revision first reaches it, as in Knative, whose scaler raises the lower
  bound to the initial scale without checking it against the upper one);
* zero is applied only with scale-to-zero enabled, with the activator answering in the path (or
  target-burst-capacity -1), and after the revision has been in proxy mode for the whole
  scale-to-zero grace period — requests always have somewhere to wait;
* the bare KPA decision never scales down while panicking and never moves faster than its rates.
"""

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from autoscaler.revision import RevisionAutoscaler, settings_from
from autoscaler.scaling import Autoscaler, DeciderSpec
from autoscaler.stat import Stat

A = "autoscaling.knative.dev/"
T0 = 1_700_000_000.0
SETTINGS = settings(max_examples=120, deadline=None, derandomize=True)


@st.composite
def revision_settings(draw: st.DrawFn) -> tuple[dict[str, str], dict[str, str], int]:
    min_scale = draw(st.integers(0, 3))
    max_scale = draw(st.sampled_from([0, min_scale, min_scale + 1, min_scale + 4]))
    if max_scale == 0 and min_scale:
        max_scale = draw(st.sampled_from([0, min_scale + 2]))
    annotations = {
        A + "min-scale": str(min_scale),
        A + "max-scale": str(max_scale),
        A + "initial-scale": str(draw(st.integers(0, 4))),
        A + "window": f"{draw(st.integers(6, 12))}s",
        A + "target-burst-capacity": draw(st.sampled_from(["-1", "0", "5", "211"])),
        A + "target": str(draw(st.sampled_from([1, 2, 10]))),
        A + "scale-to-zero-pod-retention-period": f"{draw(st.sampled_from([0, 3, 20]))}s",
    }
    config = {
        "allow-zero-initial-scale": "true",
        "enable-scale-to-zero": draw(st.sampled_from(["true", "false"])),
        "scale-to-zero-grace-period": f"{draw(st.integers(1, 15))}s",
        "max-scale-down-rate": draw(st.sampled_from(["1.5", "2", "10"])),
    }
    return annotations, config, draw(st.sampled_from([0, 1, 4]))


# One step: seconds later, the stat's concurrency (None: no stat), whether the ready pods have caught
# up with the last applied scale (else they stay as they were, or a pod is lost), the activator
# probe's answer, and whether this is a decider tick (else only the reconciler runs).
steps = st.lists(
    st.tuples(
        st.floats(0.1, 4.0),
        st.one_of(st.none(), st.just(0.0), st.just(0.0), st.floats(0.0, 40.0)),
        st.sampled_from(["caught up", "caught up", "lagging", "pod lost"]),
        st.booleans(),
        st.booleans(),
    ),
    min_size=1,
    max_size=150,
)


@SETTINGS
@given(revision=revision_settings(), trace=steps)
def test_applied_scale_stays_in_bounds_and_zero_waits_for_the_grace(revision, trace):
    annotations, config, cc = revision
    s = settings_from(annotations, config, cc)
    rev = RevisionAutoscaler(s, T0, ready_pods=0)
    low = s.min_scale
    high = max(s.max_scale, s.initial_scale) if s.max_scale else math.inf
    proxy_since: float | None = T0  # a new revision starts behind the activator
    now = T0
    ready = applied = 0
    for seconds, concurrency, pods, in_path, tick in trace:
        now += seconds
        if pods == "caught up":
            ready = min(applied, 6)
        elif pods == "pod lost":
            ready = max(ready - 1, 0)
        if concurrency is not None:
            rev.record(Stat("activator", average_concurrent_requests=concurrency), now)
        d = rev.decide(now, ready, in_path) if tick else rev.reconcile(now, ready, in_path)
        if d.apply:
            applied = d.desired_pods
            assert d.desired_pods >= 0, d
            assert low <= d.desired_pods <= high, (d, low, high)
            if d.desired_pods == 0:
                assert s.enable_scale_to_zero, d
                assert in_path or s.spec.target_burst_capacity == -1, d
                assert proxy_since is not None and now - proxy_since >= s.scale_to_zero_grace_period, (
                    d,
                    now - T0,
                    proxy_since and proxy_since - T0,
                )
        if d.mode == "serve":
            proxy_since = None
        elif proxy_since is None:
            proxy_since = now
        assert now - T0 < s.activation_timeout  # keeps the activation-timeout road to zero out of scope


@SETTINGS
@given(
    target=st.sampled_from([0.5, 1.0, 10.0, 70.0]),
    up=st.sampled_from([1.1, 2.0, 1000.0]),
    down=st.sampled_from([1.1, 2.0, 10.0]),
    threshold=st.sampled_from([1.1, 2.0, 10.0]),
    created_ready=st.integers(0, 5),
    trace=st.lists(
        st.tuples(st.floats(0.0, 10.0), st.integers(0, 30), st.floats(0, 500), st.floats(0, 500)),
        min_size=1,
        max_size=40,
    ),
)
def test_kpa_decision_respects_rates_and_never_shrinks_in_panic(
    target, up, down, threshold, created_ready, trace
):
    spec = DeciderSpec(
        target_value=target,
        total_value=target / 0.7,
        max_scale_up_rate=up,
        max_scale_down_rate=down,
        panic_threshold=threshold,
        stable_window=60.0,
    )
    scaler = Autoscaler(spec, T0, created_ready)
    now = T0
    previous: int | None = None
    for seconds, ready, stable, panic in trace:
        now += seconds
        was_panicking = scaler.panicking
        desired, ebc = scaler.decide(now, ready, stable, panic)
        one = max(ready, 1)
        assert desired >= 0
        assert desired <= max(math.ceil(up * one), created_ready, previous or 0)
        if scaler.panicking and was_panicking and previous is not None:
            assert desired >= previous, "scaled down while panicking"
        if not scaler.panicking:
            assert desired >= math.floor(one / down), "dropped faster than the scale-down rate"
        assert ebc == math.floor(ready * spec.total_value - spec.target_burst_capacity - panic)
        previous = desired
