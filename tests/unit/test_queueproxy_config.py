"""Queue-proxy settings from Knative's environment variables and flags, and the probe encoding."""

import json

import pytest

from queueproxy.config import ProbeSpec, QueueProxyConfigError, load_config, parse_probes


def test_defaults_are_knatives():
    config = load_config({})
    assert (config.container_concurrency, config.serving_port, config.admin_port) == (0, 8012, 8022)
    assert (config.stats_port, config.metrics_port, config.user_port) == (9090, 9091, 8080)
    assert (config.revision_timeout, config.response_start_timeout, config.idle_timeout) == (300.0, 0.0, 0.0)
    assert config.drain_timeout == 30.0
    assert config.host == "127.0.0.1"
    assert config.probes == (ProbeSpec(kind="tcp", host="127.0.0.1", port=8080),)
    assert config.pod_name  # the host name when SERVING_POD is not set


def test_environment_is_read_and_flags_override_it():
    env = {"CONTAINER_CONCURRENCY": "4", "USER_PORT": "9000", "REVISION_TIMEOUT_SECONDS": "60",
           "REVISION_RESPONSE_START_TIMEOUT_SECONDS": "5", "REVISION_IDLE_TIMEOUT_SECONDS": "2.5",
           "SERVING_POD": "hello-abc", "QUEUE_SERVING_PORT": "8013"}  # fmt: skip
    config = load_config(env, {"container_concurrency": "8", "serving_port": "0", "queue_depth": None})
    assert config.container_concurrency == 8
    assert config.serving_port == 0
    assert (config.user_port, config.revision_timeout) == (9000, 60.0)
    assert (config.response_start_timeout, config.idle_timeout) == (5.0, 2.5)
    assert config.pod_name == "hello-abc"
    assert config.probes[0].port == 9000  # the default probe follows the user port


def test_queue_depth_defaults_to_ten_times_cc_and_can_be_set():
    assert load_config({"CONTAINER_CONCURRENCY": "3"}).effective_queue_depth == 30
    assert load_config({"CONTAINER_CONCURRENCY": "3"}, {"queue_depth": "7"}).effective_queue_depth == 7


def test_idle_pool_size_is_cc_or_1000_when_unlimited():
    assert load_config({"CONTAINER_CONCURRENCY": "5"}).max_idle_connections == 5
    assert load_config({}).max_idle_connections == 1000


@pytest.mark.parametrize(
    ("env", "flags", "message"),
    [
        ({"CONTAINER_CONCURRENCY": "x"}, {}, 'CONTAINER_CONCURRENCY="x": not an integer'),
        ({"CONTAINER_CONCURRENCY": "-2"}, {}, 'CONTAINER_CONCURRENCY="-2": must be >= 0'),
        ({"USER_PORT": "0"}, {}, 'USER_PORT="0": must be in [1, 65535]'),
        ({"QUEUE_SERVING_PORT": "65536"}, {}, 'QUEUE_SERVING_PORT="65536": must be in [0, 65535]'),
        ({"REVISION_TIMEOUT_SECONDS": "0"}, {}, 'REVISION_TIMEOUT_SECONDS="0": must be a positive number'),
        (
            {"REVISION_IDLE_TIMEOUT_SECONDS": "-1"},
            {},
            'REVISION_IDLE_TIMEOUT_SECONDS="-1": must be a non-negative',
        ),
        ({"REVISION_TIMEOUT_SECONDS": "nan"}, {}, 'REVISION_TIMEOUT_SECONDS="nan": must be a positive'),
        ({}, {"drain_timeout": "soon"}, '--drain-timeout="soon": not a number of seconds'),
        ({}, {"queue_depth": "5"}, "--queue-depth=5: needs a container concurrency > 0"),
    ],
    ids=[
        "cc-not-int",
        "cc-negative",
        "user-port-0",
        "serving-port-too-big",
        "timeout-0",
        "idle-timeout-negative",
        "timeout-nan",
        "drain-timeout-not-a-number",
        "queue-depth-without-cc",
    ],
)
def test_bad_values_are_refused_naming_the_setting(env, flags, message):
    with pytest.raises(QueueProxyConfigError) as refused:
        load_config(env, flags)
    assert message in str(refused.value)


def test_http_probe_in_knatives_encoding():
    action = {"path": "/healthz", "port": 8081, "host": "127.0.0.1", "scheme": "HTTP",
              "httpHeaders": [{"name": "K-Kubelet-Probe", "value": "queue"}]}  # fmt: skip
    thresholds = {"successThreshold": 2, "periodSeconds": 5, "timeoutSeconds": 3, "failureThreshold": 4}
    raw = json.dumps({"httpGet": action, **thresholds})
    (probe,) = parse_probes(raw, "SERVING_READINESS_PROBE", "127.0.0.1", 8080)
    assert probe == ProbeSpec(kind="http", host="127.0.0.1", port=8081, path="/healthz",
                              headers=(("K-Kubelet-Probe", "queue"),), timeout=3.0, period=5.0,
                              success_threshold=2, failure_threshold=4)  # fmt: skip
    assert not probe.aggressive


def test_probe_list_with_defaults_and_exec_probed_as_tcp():
    raw = json.dumps([{"tcpSocket": {"port": "8082"}}, {"exec": {"command": ["true"]}}])
    tcp, exec_as_tcp = parse_probes(raw, "SERVING_READINESS_PROBE", "10.0.0.1", 8080)
    assert (tcp.kind, tcp.host, tcp.port, tcp.aggressive) == ("tcp", "10.0.0.1", 8082, True)
    assert (exec_as_tcp.kind, exec_as_tcp.port) == ("tcp", 8080)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("{nope", "not valid JSON"),
        ('"tcp"', "a probe must be a JSON object"),
        ('{"httpGet": {"port": "http"}}', "httpGet.port='http': must be a port number"),
        ('{"httpGet": {"scheme": "HTTPS"}}', "only HTTP is supported"),
        ('{"tcpSocket": {}, "periodSeconds": -1}', "periodSeconds=-1: must be a number >= 0"),
        ('{"grpcx": {}}', "needs one of httpGet, tcpSocket"),
    ],
    ids=["not-json", "not-an-object", "named-port", "https", "negative-period", "unknown-kind"],
)
def test_bad_probes_are_refused_naming_the_field(raw, message):
    with pytest.raises(QueueProxyConfigError) as refused:
        parse_probes(raw, "SERVING_READINESS_PROBE", "127.0.0.1", 8080)
    assert message in str(refused.value)
