"""config-autoscaler keys and autoscaling.knative.dev/* annotations (autoscaler.config)."""

import pytest
from tables import named

from autoscaler.config import (
    AutoscalerConfig,
    AutoscalerConfigError,
    RevisionAnnotations,
    initial_scale,
    panic_window,
    parse_annotations,
    parse_config,
    parse_duration,
    resolve_metric_target,
)

A = "autoscaling.knative.dev/"
UTIL = "target-utilization-percentage"


def test_empty_config_gives_knatives_defaults():
    assert parse_config({}) == AutoscalerConfig()
    c = parse_config(None)
    assert (c.target_burst_capacity, c.stable_window, c.panic_window_percentage) == (211.0, 60.0, 10.0)
    assert (c.scale_to_zero_grace_period, c.initial_scale, c.enable_scale_to_zero) == (30.0, 1, True)


def test_every_config_key_is_read():
    c = parse_config(
        {
            "container-concurrency-target-percentage": "80",
            "container-concurrency-target-default": "10.5",
            "requests-per-second-target-default": "10.11",
            "target-burst-capacity": "-1",
            "stable-window": "5m",
            "panic-window-percentage": "20",
            "panic-threshold-percentage": "150",
            "max-scale-up-rate": "1.01",
            "max-scale-down-rate": "3",
            "enable-scale-to-zero": "false",
            "scale-to-zero-grace-period": "1m",
            "scale-to-zero-pod-retention-period": "2m3s",
            "activator-capacity": "905",
            "initial-scale": "0",
            "allow-zero-initial-scale": "true",
            "min-scale": "1",
            "max-scale": "10",
            "max-scale-limit": "100",
            "scale-down-delay": "15m",
            "pod-autoscaler-class": "kpa.autoscaling.knative.dev",
            "progress-deadline": "120s",
            "tick-interval": "9s",  # retired key: ignored, as in Knative
        }
    )
    assert c == AutoscalerConfig(
        container_concurrency_target_fraction=0.8,
        container_concurrency_target_default=10.5,
        requests_per_second_target_default=10.11,
        target_burst_capacity=-1,
        stable_window=300,
        panic_window_percentage=20,
        panic_threshold_percentage=150,
        max_scale_up_rate=1.01,
        max_scale_down_rate=3,
        enable_scale_to_zero=False,
        scale_to_zero_grace_period=60,
        scale_to_zero_pod_retention_period=123,
        activator_capacity=905,
        initial_scale=0,
        allow_zero_initial_scale=True,
        min_scale=1,
        max_scale=10,
        max_scale_limit=100,
        scale_down_delay=900,
        progress_deadline=120,
    )


@pytest.mark.parametrize(
    ("value", "fraction"),
    named(
        [("1", 0.01 * 100), ("0.7", 0.7), ("70", 0.7), ("100", 1.0), ("1.5", 0.015)], lambda value, _: value
    ),
)
def test_target_percentage_above_one_is_a_percentage(value, fraction):  # §9.13: "1" means 100 %
    got = parse_config(
        {"container-concurrency-target-percentage": value}
    ).container_concurrency_target_fraction
    assert got == pytest.approx(fraction)


@pytest.mark.parametrize(
    ("key", "value", "message"),
    named(
        [
            ("stable-window", "abc", 'config-autoscaler stable-window="abc": not a duration'),
            ("stable-window", "60", 'config-autoscaler stable-window="60": not a duration'),
            ("stable-window", "5s", "must be in [6s, 1h]"),
            ("stable-window", "61m", "must be in [6s, 1h]"),
            ("stable-window", "6500ms", "whole number of seconds"),
            ("target-burst-capacity", "-2", "-1 for an unlimited"),
            ("target-burst-capacity", "nan", "not a number"),
            ("container-concurrency-target-percentage", "0", "must be in (0, 100] percent"),
            ("container-concurrency-target-percentage", "101", "must be in (0, 100] percent"),
            ("container-concurrency-target-default", "0.001", "must be at least 0.01"),
            ("requests-per-second-target-default", "0", "must be at least 0.01"),
            ("max-scale-up-rate", "1", "greater than 1"),
            ("max-scale-down-rate", "0.5", "greater than 1"),
            ("panic-window-percentage", "0.5", "[1, 100]"),
            ("scale-to-zero-grace-period", "0s", "must be positive"),
            ("scale-to-zero-pod-retention-period", "-1s", "must not be negative"),
            ("activator-capacity", "0.5", "at least 1"),
            ("initial-scale", "0", "allow-zero-initial-scale"),
            ("initial-scale", "1.5", "not an integer"),
            ("min-scale", "-1", "must not be negative"),
            ("max-scale-limit", "-1", "must not be negative"),
            ("scale-down-delay", "1.5s", "whole number of seconds"),
            ("enable-scale-to-zero", "yes", "not a boolean"),
            ("pod-autoscaler-class", "hpa.autoscaling.knative.dev", "only kpa.autoscaling.knative.dev"),
            ("max-scale", "99999999999", "int32"),
        ],
        lambda key, value, _: f"{key}={value}",
    ),
)
def test_bad_config_value_names_key_value_and_rule(key, value, message):
    with pytest.raises(AutoscalerConfigError) as err:
        parse_config({key: value})
    assert f'config-autoscaler {key}="{value}"' in str(err.value)
    assert message in str(err.value)


def test_panic_threshold_has_no_range_at_cluster_level():  # §9.22
    assert parse_config({"panic-threshold-percentage": "50"}).panic_threshold_percentage == 50


def test_max_scale_limit_requires_a_bounded_max_scale():  # §9.21
    with pytest.raises(AutoscalerConfigError, match=r"max-scale.*\[1, max-scale-limit=10\]"):
        parse_config({"max-scale-limit": "10"})
    assert parse_config({"max-scale-limit": "10", "max-scale": "5"}).max_scale == 5


def test_min_scale_may_not_exceed_max_scale():
    with pytest.raises(AutoscalerConfigError, match='min-scale="5": must not exceed max-scale=3'):
        parse_config({"min-scale": "5", "max-scale": "3"})


@pytest.mark.parametrize(
    ("text", "seconds"),
    named(
        [
            ("60s", 60),
            ("1m", 60),
            ("1h", 3600),
            ("1m30s", 90),
            ("1.5h", 5400),
            ("500ms", 0.5),
            ("0", 0),
            (".5s", 0.5),
        ],
        lambda text, _: text,
    ),
)
def test_durations_parse_like_go(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    "text",
    ["60", "1d", "s", "", " 60s", "1 m"],
    ids=["bare-number", "days", "unit-only", "empty", "leading-space", "inner-space"],
)
def test_malformed_durations_are_rejected(text):
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration(text)


def test_annotations_are_read_with_defaults_absent():
    parsed = parse_annotations(
        {
            A + "class": "kpa.autoscaling.knative.dev",
            A + "metric": "rps",
            A + "target": "50",
            A + "target-utilization-percentage": "80",
            A + "target-burst-capacity": "0",
            A + "window": "2m",
            A + "panic-window-percentage": "20",
            A + "panic-threshold-percentage": "300",
            A + "min-scale": "1",
            A + "max-scale": "9",
            A + "initial-scale": "3",
            A + "activation-scale": "2",
            A + "scale-down-delay": "30s",
            A + "scale-to-zero-pod-retention-period": "1m",
            A + "metric-aggregation-algorithm": "weighted-exponential",
            "serving.knative.dev/progress-deadline": "5s",
            "app.kubernetes.io/name": "ignored",
        }
    )
    assert parsed == RevisionAnnotations(
        metric="rps",
        target=50,
        target_utilization=0.8,
        target_burst_capacity=0,
        window=120,
        panic_window_percentage=20,
        panic_threshold_percentage=300,
        min_scale=1,
        max_scale=9,
        initial_scale=3,
        activation_scale=2,
        scale_down_delay=30,
        scale_to_zero_pod_retention_period=60,
        metric_aggregation_algorithm="weighted-exponential",
        progress_deadline=5,
    )


@pytest.mark.parametrize(
    ("alias", "value", "field", "want"),
    named(
        [
            ("minScale", "2", "min_scale", 2),
            ("maxScale", "7", "max_scale", 7),
            ("initialScale", "4", "initial_scale", 4),
            ("targetUtilizationPercentage", "50", "target_utilization", 0.5),
            ("targetBurstCapacity", "-1", "target_burst_capacity", -1),
            ("panicWindowPercentage", "15", "panic_window_percentage", 15),
            ("panicThresholdPercentage", "400", "panic_threshold_percentage", 400),
            ("scaleDownDelay", "1m", "scale_down_delay", 60),
            ("scaleToZeroPodRetentionPeriod", "10s", "scale_to_zero_pod_retention_period", 10),
            (
                "metricAggregationAlgorithm",
                "weightedExponential",
                "metric_aggregation_algorithm",
                "weighted-exponential",
            ),
        ]
    ),
)
def test_legacy_camel_case_aliases_are_accepted(alias, value, field, want):
    assert getattr(parse_annotations({A + alias: value}), field) == want


def test_new_name_and_alias_together_are_rejected():
    with pytest.raises(
        AutoscalerConfigError,
        match=r"min-scale and annotation autoscaling\.knative\.dev/minScale are both set",
    ):
        parse_annotations({A + "min-scale": "1", A + "minScale": "1"})


@pytest.mark.parametrize(
    ("key", "value", "message"),
    named(
        [
            ("target", "abc", "not a number"),
            ("target", "0.001", "at least 0.01"),
            ("metric", "cpu", "must be one of concurrency, rps"),
            ("class", "hpa.autoscaling.knative.dev", "only kpa.autoscaling.knative.dev"),
            ("target-utilization-percentage", "0.5", "[1, 100]"),
            ("target-burst-capacity", "-3", "-1 for an unlimited"),
            ("window", "5s", "[6s, 1h]"),
            ("window", "10.5s", "whole number of seconds"),
            ("panic-window-percentage", "101", "[1, 100]"),
            ("panic-threshold-percentage", "100", "[110, 1000]"),  # §9.22: annotation range
            ("min-scale", "-1", "must not be negative"),
            ("max-scale", "x", "not an integer"),
            ("initial-scale", "0", "allow-zero-initial-scale"),
            ("activation-scale", "1", "at least 2"),
            ("scale-down-delay", "2h", "[0s, 1h]"),
            ("scale-down-delay", "1500ms", "whole number of seconds"),
            ("scale-to-zero-pod-retention-period", "-5s", "[0s, 1h]"),
            ("metric-aggregation-algorithm", "median", "must be one of linear"),
            ("minscale", "1", "unknown autoscaling annotation"),
        ],
        lambda key, value, _: f"{key}={value}",
    ),
)
def test_bad_annotation_is_rejected_with_key_value_and_rule(key, value, message):
    with pytest.raises(AutoscalerConfigError) as err:
        parse_annotations({A + key: value})
    assert f'annotation {A}{key}="{value}"' in str(err.value)
    assert message in str(err.value)


def test_error_message_reads_like_the_guide():
    with pytest.raises(AutoscalerConfigError) as err:
        parse_annotations({A + "target": "abc"})
    assert str(err.value) == 'annotation autoscaling.knative.dev/target="abc": not a number'


def test_max_scale_below_min_scale_is_rejected():
    with pytest.raises(AutoscalerConfigError, match="must not be less than min-scale=5"):
        parse_annotations({A + "min-scale": "5", A + "max-scale": "3"})


def test_unlimited_max_scale_annotation_is_forbidden_under_a_limit():  # §9.21
    limited = parse_config({"max-scale-limit": "10", "max-scale": "10"})
    with pytest.raises(AutoscalerConfigError, match="0, unlimited, is not allowed"):
        parse_annotations({A + "max-scale": "0"}, limited)
    with pytest.raises(AutoscalerConfigError, match=r"\[1, max-scale-limit=10\]"):
        parse_annotations({A + "max-scale": "11"}, limited)


def test_zero_initial_scale_annotation_needs_the_cluster_switch():
    allowed = parse_config({"allow-zero-initial-scale": "true"})
    assert parse_annotations({A + "initial-scale": "0"}, allowed).initial_scale == 0


def test_activation_scale_must_fit_inside_the_bounds():
    with pytest.raises(AutoscalerConfigError, match="must not exceed max-scale=3"):
        parse_annotations({A + "activation-scale": "5", A + "max-scale": "3"})


@pytest.mark.parametrize(
    ("label", "config", "annotations", "cc", "want"),
    named([
        ("defaults with unlimited concurrency", {}, {}, 0, (70, 100)),
        ("container concurrency is the total", {}, {}, 10, (7, 10)),
        ("rps uses the rps default and fixed 70 %", {}, {"metric": "rps"}, 0, (140, 200)),
        ("rps ignores container concurrency", {}, {"metric": "rps"}, 10, (140, 200)),
        ("target annotation replaces the total", {}, {"target": "50"}, 0, (35, 50)),
        ("target annotation is capped by container concurrency", {}, {"target": "50"}, 10, (7, 10)),
        ("utilization annotation replaces the fraction", {}, {UTIL: "80"}, 0, (80, 100)),
        ("cluster fraction of 1.0 means all of it", {"container-concurrency-target-percentage": "1.0"}, {}, 0,
         (100, 100)),
        ("target value never drops below 0.01", {}, {"target": "0.01", UTIL: "1"}, 0, (0.01, 0.01)),
        ("rps target annotation is not capped", {}, {"metric": "rps", "target": "500"}, 10, (350, 500)),
    ]),
)  # fmt: skip
def test_resolve_metric_target(label, config, annotations, cc, want):  # §1.8
    parsed = parse_annotations({A + k: v for k, v in annotations.items()})
    tv, tot = resolve_metric_target(parse_config(config), parsed, cc)
    assert (tv, tot) == pytest.approx(want), label


def test_negative_container_concurrency_is_rejected():
    with pytest.raises(AutoscalerConfigError, match="containerConcurrency=-1"):
        resolve_metric_target(AutoscalerConfig(), RevisionAnnotations(), -1)


@pytest.mark.parametrize(
    ("stable", "percentage", "want"),
    named(
        [(60, 10, 6), (10, 10, 1), (600, 10, 60), (60, 50, 30), (60, 51, 31), (6, 1, 1), (3600, 100, 3600)],
        lambda stable, percentage, _: f"{percentage}%-of-{stable}s",
    ),
)
def test_panic_window_rounds_to_the_second_with_a_one_second_floor(stable, percentage, want):  # §2.1
    assert panic_window(stable, percentage) == want


@pytest.mark.parametrize(
    ("config", "annotations", "want"),
    [({}, {}, 1), ({"initial-scale": "3"}, {}, 3), ({}, {"initial-scale": "5"}, 5)],
    ids=["default", "from-config", "from-annotation"],
)
def test_initial_scale_is_the_annotation_else_the_config(config, annotations, want):
    parsed = parse_annotations({A + k: v for k, v in annotations.items()})
    assert initial_scale(parse_config(config), parsed) == want


def test_strict_config_rejects_an_unknown_key_with_a_suggestion():
    expected = r"config-autoscaler stable-windw=\"6s\": unknown key; did you mean 'stable-window'"
    with pytest.raises(AutoscalerConfigError, match=expected):
        parse_config({"stable-windw": "6s"}, strict=True)


def test_lenient_config_ignores_unknown_keys_as_knative_does():
    assert parse_config({"stable-windw": "6s", "_example": "x"}).stable_window == 60.0


def test_strict_config_still_ignores_knatives_retired_keys():
    assert parse_config({"tick-interval": "2s", "_example": "..."}, strict=True).stable_window == 60.0
