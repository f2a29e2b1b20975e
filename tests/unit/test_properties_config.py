"""Properties of configuration parsing: any input is either accepted or refused with the documented
error type, and the refusal names the key (hypothesis).

Covered: config-autoscaler data and ``autoscaling.knative.dev/*`` annotations with containerConcurrency
(``autoscaler.revision.settings_from``), the activator's revision config documents
(``activator.config.RevisionConfig.from_json``) and the queue-proxy's environment and flags
(``queueproxy.config.load_config``). Values are drawn from near-misses of valid ones — numbers with
signs, exponents and Unicode digits, durations, booleans, huge and non-finite values, padding — plus
arbitrary text and non-string types. Whatever is accepted must also be usable: a revision's settings
must carry one decision without an exception.
"""

import string

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from activator.config import ActivatorConfigError, RevisionConfig
from autoscaler.config import ANNOTATION_KEYS, CONFIG_KEYS, AutoscalerConfigError
from autoscaler.revision import RevisionAutoscaler, settings_from
from autoscaler.stat import Stat
from queueproxy.config import ENV_NAMES, FLAG_NAMES, QueueProxyConfigError, load_config

SETTINGS = settings(
    max_examples=300, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)

numbers = st.one_of(
    st.integers(-5, 1200).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["1e400", "-1e400", "nan", "inf", "0x10", "1_000", "٣", "１２", "+5", "-0", ".5", "5."]),
    st.sampled_from(["9" * 30, "9" * 5000, "2147483648", "-2147483649"]),
)
durations = st.one_of(
    st.tuples(st.integers(-10, 7200), st.sampled_from(["s", "m", "h", "ms", "us", "µs", "ns", ""])).map(
        lambda t: f"{t[0]}{t[1]}"
    ),
    st.sampled_from(["1m30s", "1.5h", "0", "-0", "60", "s", "1e3s", "9" * 400 + "h", "1h" * 50]),
)
texts = st.one_of(
    numbers,
    durations,
    st.sampled_from(
        ["true", "false", "True", "FALSE", "t", "yes", "", " ", " 5 ", "5\n", "rps", "concurrency"]
    ),
    st.sampled_from(
        ["linear", "weighted-exponential", "kpa.autoscaling.knative.dev", "hpa.autoscaling.knative.dev"]
    ),
    st.text(max_size=12),
)
non_strings = st.one_of(
    st.none(), st.integers(), st.floats(), st.booleans(), st.lists(st.integers(), max_size=2)
)


def named(message: str, keys: list[str]) -> bool:
    return any(str(key) in message for key in keys)


@SETTINGS
@given(
    config=st.dictionaries(
        st.one_of(st.sampled_from(sorted(CONFIG_KEYS)), st.text(string.ascii_lowercase + "-", max_size=12)),
        st.one_of(texts, texts, non_strings),
        max_size=6,
    ),
    annotations=st.dictionaries(
        st.one_of(
            st.sampled_from(sorted(ANNOTATION_KEYS)),
            st.text(max_size=8).map(lambda t: "autoscaling.knative.dev/" + t),
            st.text(max_size=8),
        ),
        st.one_of(texts, texts, non_strings),
        max_size=6,
    ),
    cc=st.one_of(st.integers(-2, 1002), non_strings, st.text(max_size=3)),
)
def test_revision_settings_accept_or_name_the_bad_key(config, annotations, cc):
    try:
        s = settings_from(annotations, config, cc)
    except AutoscalerConfigError as exc:
        assert named(str(exc), [*config, *annotations, "containerConcurrency"]), str(exc)
        return
    rev = RevisionAutoscaler(s, 1_700_000_000.0, ready_pods=1)
    rev.record(Stat("pod", average_concurrent_requests=3.0, request_count=5.0), 1_700_000_000.0)
    decision = rev.decide(1_700_000_000.0, 1)
    assert decision.valid


@SETTINGS
@given(
    doc=st.one_of(
        st.dictionaries(
            st.one_of(
                st.sampled_from(
                    ["name", "namespace", "container_concurrency", "timeout_seconds", "queue_bound"]
                ),
                st.text(max_size=5),
                st.integers(),
            ),
            st.one_of(
                st.sampled_from(["hello", "default", "a-b", "hello\n", "Hello", "-a", "a" * 64]),
                st.integers(-3, 10**6),
                st.integers(10**300, 10**400),
                st.floats(allow_nan=True, allow_infinity=True),
                non_strings,
                st.text(max_size=6),
            ),
            max_size=5,
        ),
        non_strings,
    )
)
def test_activator_revision_config_accepts_or_names_the_bad_field(doc):
    try:
        config = RevisionConfig.from_json(doc)
    except ActivatorConfigError as exc:
        message = str(exc)
        assert not isinstance(doc, dict) or named(message, [*doc, "name", "revision config"]), message
        return
    for label in (config.name, config.namespace):
        assert label.isascii() and label == label.strip() and 0 < len(label) <= 63, config
    assert RevisionConfig.from_json(config.to_json()) == config


@SETTINGS
@given(
    env=st.dictionaries(st.sampled_from(sorted(set(ENV_NAMES.values()))), texts, max_size=5),
    flags=st.dictionaries(st.sampled_from(sorted(FLAG_NAMES)), st.one_of(texts, st.none()), max_size=4),
    probe=st.one_of(
        st.none(),
        st.sampled_from(
            [
                "",
                "{",
                "[]",
                "null",
                '{"tcpSocket": {"port": 8080}}',
                '{"httpGet": {"path": "health", "port": 1}}',
                '{"httpGet": {"port": "x"}, "periodSeconds": -1}',
                '[{"exec": {}}, {"tcpSocket": {}}]',
            ]
        ),
        st.text(max_size=10),
    ),
)
def test_queue_proxy_config_accepts_or_names_the_bad_setting(env, flags, probe):
    env = {"USER_PORT": "8080", **env}
    if probe is not None:
        env["SERVING_READINESS_PROBE"] = probe
    try:
        load_config(env, flags)
    except QueueProxyConfigError as exc:
        given = [dest for dest, value in flags.items() if value is not None]
        names = [*env, *(FLAG_NAMES[dest] for dest in given), "SERVING_READINESS_PROBE"]
        auth_env = {env_name for dest, env_name in ENV_NAMES.items() if dest.startswith("auth_")}
        if any(dest.startswith("auth_") for dest in given) or auth_env & set(env):
            # Authentication errors name the environment variables even for flags (AuthSpec reports
            # its annotations, load_config renames them to the variables), and a missing partner
            # setting is named rather than the one given.
            names += sorted(auth_env)
        assert named(str(exc), names), str(exc)


# Regressions found by the properties above (activator.config), pinned as plain examples.


def test_activator_config_with_keys_of_mixed_types_is_refused_by_name():
    """A YAML mapping may mix integer and string keys: refused as unknown fields, not a TypeError."""
    with pytest.raises(ActivatorConfigError, match=r"unknown field\(s\) \[0, 'x'\]"):
        RevisionConfig.from_json({"name": "hello", 0: None, "x": 1})


def test_activator_config_name_with_a_trailing_newline_is_not_a_dns_label():
    """``$`` matches before a final newline, so "hello\\n" passed as a DNS label."""
    with pytest.raises(ActivatorConfigError, match=r"revision name='hello\\n': must be a DNS label"):
        RevisionConfig.from_json({"name": "hello\n"})


def test_activator_config_huge_integer_timeout_is_refused_by_name():
    """An integer too large for a float raised OverflowError instead of naming timeout_seconds."""
    with pytest.raises(ActivatorConfigError, match=r"timeout_seconds=10{400}: must be a number > 0"):
        RevisionConfig.from_json({"name": "hello", "timeout_seconds": 10**400})
