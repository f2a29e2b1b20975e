"""config-tracing keys and OpenTelemetry's variables: what turns tracing on, and errors that name the key."""

from __future__ import annotations

import pytest
from tables import named

from localbackend.stack_file import StackConfigError, parse_stack
from queueproxy.config import QueueProxyConfigError, load_config
from tracing.config import TracingConfig, TracingConfigError, parse_tracing, tracing_from_env

OTLP = "http://collector:4318/v1/traces"

ACCEPTED = [
    ("nothing set: off", {}, TracingConfig()),
    ("backend none", {"TRACING_CONFIG_BACKEND": "none"}, TracingConfig()),
    ("OTEL base endpoint alone turns on otlp", {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318/"},
     TracingConfig("otlp", 0.1, OTLP)),
    ("traces endpoint wins over the base", {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://other:4318",
                                           "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": OTLP},
     TracingConfig("otlp", 0.1, OTLP)),
    ("Knative keys", {"TRACING_CONFIG_BACKEND": "zipkin", "TRACING_CONFIG_SAMPLE_RATE": "0.5",
                      "TRACING_CONFIG_ZIPKIN_ENDPOINT": "http://zipkin:9411/api/v2/spans"},
     TracingConfig("zipkin", 0.5, "http://zipkin:9411/api/v2/spans")),
    ("debug samples everything",
     {"TRACING_CONFIG_DEBUG": "true", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": OTLP},
     TracingConfig("otlp", 1.0, OTLP)),
]  # fmt: skip


@pytest.mark.parametrize(("case", "env", "expected"), named(ACCEPTED))
def test_settings_from_the_environment(case, env, expected):
    config = tracing_from_env(env)
    assert config == expected
    assert tracing_from_env(config.to_env()) == config  # what kpa up hands its children means the same


REFUSED = [
    ("unknown backend", {"TRACING_CONFIG_BACKEND": "jaeger"},
     'TRACING_CONFIG_BACKEND="jaeger": unknown backend'),
    ("sample rate not a number", {"TRACING_CONFIG_SAMPLE_RATE": "often"},
     'TRACING_CONFIG_SAMPLE_RATE="often": not a number'),
    ("sample rate above 1", {"TRACING_CONFIG_SAMPLE_RATE": "1.5"},
     'TRACING_CONFIG_SAMPLE_RATE="1.5": must be from 0 to 1'),
    ("sample rate nan", {"TRACING_CONFIG_SAMPLE_RATE": "nan"}, "must be from 0 to 1"),
    ("otlp without endpoint", {"TRACING_CONFIG_BACKEND": "otlp"},
     "needs OTEL_EXPORTER_OTLP_TRACES_ENDPOINT (or OTEL_EXPORTER_OTLP_ENDPOINT)"),
    ("zipkin without endpoint", {"TRACING_CONFIG_BACKEND": "zipkin"},
     "needs TRACING_CONFIG_ZIPKIN_ENDPOINT"),
    ("endpoint not a URL", {"OTEL_EXPORTER_OTLP_ENDPOINT": "collector:4318"},
     'OTEL_EXPORTER_OTLP_ENDPOINT="collector:4318/v1/traces": must be an http:// or https:// URL'),
    ("debug not a boolean", {"TRACING_CONFIG_DEBUG": "yes"},
     'TRACING_CONFIG_DEBUG="yes": must be true or false'),
]  # fmt: skip


@pytest.mark.parametrize(("case", "env", "message"), named(REFUSED))
def test_a_bad_setting_is_refused_naming_the_variable(case, env, message):
    with pytest.raises(TracingConfigError) as caught:
        tracing_from_env(env)
    assert message in str(caught.value)


def test_configmap_keys_are_named_as_written_and_unknown_keys_refused():
    with pytest.raises(TracingConfigError, match=r'sample-rate="-1": must be from 0 to 1'):
        parse_tracing({"backend": "otlp", "otlp-endpoint": OTLP, "sample-rate": "-1"})
    with pytest.raises(TracingConfigError, match=r"unknown tracing key\(s\) \['zipkin-url'\]"):
        parse_tracing({"zipkin-url": "http://zipkin"})
    assert parse_tracing({"backend": "otlp", "otlp-endpoint": OTLP, "sample-rate": "0"}).sample_rate == 0.0


def test_each_process_refuses_a_bad_setting_where_it_reads_its_config():
    """The queue-proxy (env), and `kpa up` (its stack file, with the line) say what is wrong."""
    with pytest.raises(QueueProxyConfigError, match=r'TRACING_CONFIG_BACKEND="jaeger": unknown backend'):
        load_config({"TRACING_CONFIG_BACKEND": "jaeger"})
    stack = "revisions:\n  - name: hello\n    command: [app]\ntracing:\n  backend: otlp\n  sample-rate: '2'\n"
    with pytest.raises(StackConfigError, match=r'stack.yaml:5: tracing.sample-rate="2": must be from 0 to 1'):
        parse_stack(stack, "stack.yaml")
    with pytest.raises(StackConfigError, match=r"tracing.backend=\"otlp\" needs tracing.otlp-endpoint"):
        parse_stack(stack.replace("'2'", "'1'"), "stack.yaml")
    traced = parse_stack(stack.replace("'2'", "'1'") + f"  otlp-endpoint: {OTLP}\n", "stack.yaml")
    assert traced.tracing == TracingConfig("otlp", 1.0, OTLP)
