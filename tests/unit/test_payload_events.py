"""KServe's payload logger, the pure part: reading ``logger: {url, mode}`` wherever it is given (the
queue-proxy's environment, a `kpa up` stack file, an InferenceService's ``spec.predictor.logger``, a
Deployment's annotations) with one parser and one set of messages, the CloudEvent it sends, and the
bounded buffer."""

from __future__ import annotations

import json

import pytest
from tables import named

from kubebackend.enrollment import EnrollmentError, enrollment_of_deployment, enrollment_of_inference_service
from kubebackend.sidecar import SidecarSpec, queue_proxy_container
from localbackend.stack_file import StackConfigError, parse_stack
from queueproxy.config import QueueProxyConfigError, load_config
from queueproxy.payload_events import (
    REQUEST_EVENT,
    RESPONSE_EVENT,
    EventBuffer,
    LoggerConfigError,
    LoggerSettings,
    LoggerSpec,
    Payload,
    binary_event,
    parse_logger,
)

ACCEPTED = [
    (
        "mode defaults to all",
        "http://message-dumper.default/",
        None,
        LoggerSpec("http://message-dumper.default/"),
    ),
    ("request", "http://sink:8080/events", "request", LoggerSpec("http://sink:8080/events", "request")),
    ("response", "http://10.0.0.1/", "response", LoggerSpec("http://10.0.0.1/", "response")),
    ("blank mode is the default", "http://sink/", "", LoggerSpec("http://sink/", "all")),
]


@pytest.mark.parametrize(("case", "url", "mode", "spec"), named(ACCEPTED))
def test_a_logger_is_read_as_kserve_writes_it(case, url, mode, spec):
    assert parse_logger(url, mode, "url", "mode") == spec


REFUSED = [
    ("no url", None, "all", "url: the sink URL is missing"),
    ("not a string", 3, "all", "url=3: must be a URL string"),
    ("no scheme", "message-dumper.default", "all", "not an http:// URL with a host"),
    ("tls", "https://sink/", "all", "TLS to the sink is not supported; use an http:// URL"),
    ("other scheme", "ftp://sink/", "all", "not an http:// URL"),
    ("bad port", "http://sink:99999/", "all", "not a URL"),
    ("port 0", "http://sink:0/", "all", "port 0"),
    (
        "unknown mode",
        "http://sink/",
        "both",
        "mode='both': unknown logger mode; use one of all, request, response",
    ),
]


@pytest.mark.parametrize(("case", "url", "mode", "message"), named(REFUSED))
def test_a_bad_logger_is_refused_naming_the_field_and_the_fix(case, url, mode, message):
    with pytest.raises(LoggerConfigError, match=r"^(url|mode)") as refused:
        parse_logger(url, mode, "url", "mode")
    assert message in str(refused.value)


def test_the_queue_proxy_reads_its_logger_from_the_environment_with_bounds_and_attributes():
    config = load_config(
        {
            "PAYLOAD_LOGGER_URL": "http://sink:8080/x?y=1",
            "PAYLOAD_LOGGER_MODE": "response",
            "PAYLOAD_LOGGER_BUFFER_EVENTS": "7",
            "PAYLOAD_LOGGER_TIMEOUT_SECONDS": "0.5",
            "SERVING_REVISION": "web",
            "SERVING_NAMESPACE": "prod",
        },
        {"serving_port": "8012", "logger_retries": "0"},
    )
    settings = config.logger
    assert settings is not None
    assert settings.spec == LoggerSpec("http://sink:8080/x?y=1", "response")
    assert (settings.inference_service, settings.namespace, settings.component) == (
        "web",
        "prod",
        "predictor",
    )
    assert settings.source == "http://localhost:8012/"
    assert (settings.buffer_events, settings.timeout, settings.retries) == (7, 0.5, 0)
    assert settings.sink() == ("sink", 8080, b"sink:8080", b"/x?y=1")
    assert load_config({}).logger is None  # off unless asked for


QP_REFUSED = [
    ("mode without url", {"PAYLOAD_LOGGER_MODE": "all"},
     "PAYLOAD_LOGGER_MODE: set without PAYLOAD_LOGGER_URL"),
    ("unknown mode", {"PAYLOAD_LOGGER_URL": "http://s/", "PAYLOAD_LOGGER_MODE": "x"},
     "PAYLOAD_LOGGER_MODE='x'"),
    ("https", {"PAYLOAD_LOGGER_URL": "https://s/"}, 'PAYLOAD_LOGGER_URL="https://s/": TLS'),
    ("zero buffer", {"PAYLOAD_LOGGER_URL": "http://s/", "PAYLOAD_LOGGER_BUFFER_EVENTS": "0"},
     'PAYLOAD_LOGGER_BUFFER_EVENTS="0": must be >= 1'),
]  # fmt: skip


@pytest.mark.parametrize(("case", "env", "message"), named(QP_REFUSED))
def test_the_queue_proxy_refuses_a_bad_logger_by_variable_name(case, env, message):
    with pytest.raises(QueueProxyConfigError) as refused:
        load_config(env)
    assert message in str(refused.value)


def test_the_request_event_is_a_binary_mode_cloudevent_with_kserves_attributes():
    settings = LoggerSettings(
        LoggerSpec("http://sink/"), "http://localhost:8012/", "iris", "ns", "predictor", "e1"
    )
    payload = Payload(REQUEST_EVENT, "id-1", b"application/json", b'{"instances": [1]}', 0.0)
    headers, body = binary_event(payload, settings, "2026-01-02T03:04:05Z")
    assert body == b'{"instances": [1]}'  # the payload as it was, not re-encoded
    assert dict(headers) == {
        b"content-type": b"application/json",
        b"ce-specversion": b"1.0",
        b"ce-id": b"id-1",
        b"ce-source": b"http://localhost:8012/",
        b"ce-type": b"org.kubeflow.serving.inference.request",
        b"ce-time": b"2026-01-02T03:04:05Z",
        b"ce-inferenceservicename": b"iris",
        b"ce-namespace": b"ns",
        b"ce-component": b"predictor",
        b"ce-endpoint": b"e1",
    }
    response = Payload(RESPONSE_EVENT, "id-1", None, b"\x00\xff", 0.0, status=500)
    headers, body = binary_event(response, settings, "2026-01-02T03:04:05Z")
    found = dict(headers)
    assert body == b"\x00\xff" and b"content-type" not in found  # none given: none invented
    assert found[b"ce-type"] == RESPONSE_EVENT.encode() and found[b"ce-statuscode"] == b"500"


def test_the_buffer_holds_at_most_its_events_and_its_bytes_in_order():
    buffer = EventBuffer(max_events=3, max_bytes=10)

    def payload(body: bytes) -> Payload:
        return Payload(REQUEST_EVENT, body.decode(), None, body, 0.0)

    assert [buffer.offer(payload(b)) for b in (b"aaaa", b"bbbb", b"ccc", b"d")] == [True, True, False, True]
    assert (len(buffer), buffer.bytes) == (3, 9)
    assert not buffer.offer(payload(b""))  # the count is full, whatever the size
    assert buffer.take().body == b"aaaa" and buffer.bytes == 5
    assert buffer.offer(payload(b"eeeee"))
    assert [buffer.take().body for _ in range(3)] == [b"bbbb", b"d", b"eeeee"]
    assert buffer.clear() == 0 and buffer.bytes == 0


# ---- the same logger, given to `kpa up` and to the Kubernetes controller --------------------------

STACK = """revisions:
- name: web
  command: python app.py
  logger:
{logger}
"""


def test_a_stack_file_revision_logs_to_its_sink_through_the_queue_proxy_environment():
    stack = parse_stack(STACK.format(logger="    url: http://127.0.0.1:9000/\n    mode: request"), "s.yaml")
    spec = stack.revisions[0].logger
    assert spec == LoggerSpec("http://127.0.0.1:9000/", "request")
    assert load_config(spec.env()).logger is not None


STACK_REFUSED = [
    (
        "unknown mode",
        "    url: http://s/\n    mode: both",
        "s.yaml:6: revisions[0].logger.mode='both': unknown",
    ),
    ("no url", "    mode: all", "s.yaml:5: revisions[0].logger.url: the sink URL is missing"),
    (
        "misspelt key",
        "    uri: http://s/",
        "s.yaml:5: revisions[0].logger.uri: unknown key; did you mean 'url'?",
    ),
]


@pytest.mark.parametrize(("case", "logger", "message"), named(STACK_REFUSED))
def test_a_stack_file_logger_is_refused_at_its_line(case, logger, message):
    with pytest.raises(StackConfigError) as refused:
        parse_stack(STACK.format(logger=logger), "s.yaml")
    assert str(refused.value).startswith(message)


def isvc(logger: object) -> dict[str, object]:
    return {
        "kind": "InferenceService",
        "metadata": {"name": "sklearn-iris", "namespace": "kserve-test"},
        "spec": {
            "predictor": {"minReplicas": 0, "logger": logger, "model": {"modelFormat": {"name": "sklearn"}}}
        },
    }


def test_an_inference_services_predictor_logger_reaches_the_queue_proxy_sidecar():
    enrollment = enrollment_of_inference_service(
        isvc({"url": "http://message-dumper.default/", "mode": "all"})
    )
    assert enrollment.logger == LoggerSpec("http://message-dumper.default/", "all")
    spec = SidecarSpec("kserve-test", "sklearn-iris", 0, 300, "kpa:t", enrollment.logger, enrollment.name)
    env = {e["name"]: e.get("value") for e in queue_proxy_container(spec, 8080, None)["env"]}
    assert env["PAYLOAD_LOGGER_URL"] == "http://message-dumper.default/"
    assert env["PAYLOAD_LOGGER_MODE"] == "all"
    assert env["PAYLOAD_LOGGER_INFERENCE_SERVICE"] == "sklearn-iris"
    settings = load_config({k: v for k, v in env.items() if v is not None}).logger
    assert settings is not None and settings.namespace == "kserve-test"
    without = SidecarSpec("kserve-test", "sklearn-iris", 0, 300, "kpa:t")
    assert not any(
        e["name"].startswith("PAYLOAD_LOGGER") for e in queue_proxy_container(without, 8080, None)["env"]
    )
    assert enrollment_of_inference_service(isvc(None)).logger is None


ISVC_REFUSED = [
    ("mode", {"url": "http://s/", "mode": "everything"}, "spec.predictor.logger.mode='everything'"),
    ("url", {"mode": "all"}, "spec.predictor.logger.url: the sink URL is missing"),
    (
        "storage",
        {"url": "http://s/", "storage": {"path": "/logs"}},
        "spec.predictor.logger.storage: not supported",
    ),
    ("not a mapping", "http://s/", "spec.predictor.logger must be a mapping"),
]


@pytest.mark.parametrize(("case", "logger", "message"), named(ISVC_REFUSED))
def test_an_inference_services_bad_logger_is_an_enrollment_error_naming_the_field(case, logger, message):
    with pytest.raises(EnrollmentError) as refused:
        enrollment_of_inference_service(isvc(logger))
    assert str(refused.value).startswith("InferenceService kserve-test/sklearn-iris: ")
    assert message in str(refused.value)


def test_a_plain_deployment_asks_for_a_logger_with_annotations():
    def deployment(annotations: dict[str, str]) -> dict[str, object]:
        meta = {"name": "web", "namespace": "d", "annotations": annotations}
        return {"kind": "Deployment", "metadata": meta}

    found = enrollment_of_deployment(deployment({"logger.kpa-emulator.dev/url": "http://sink/"}))
    assert found.logger == LoggerSpec("http://sink/", "all")
    assert enrollment_of_deployment(deployment({})).logger is None
    with pytest.raises(EnrollmentError, match=r'annotation logger\.kpa-emulator\.dev/mode="x" without'):
        enrollment_of_deployment(deployment({"logger.kpa-emulator.dev/mode": "x"}))
    with pytest.raises(EnrollmentError, match=r"annotation logger.kpa-emulator.dev/mode='x': unknown"):
        enrollment_of_deployment(
            deployment({"logger.kpa-emulator.dev/url": "http://s/", "logger.kpa-emulator.dev/mode": "x"})
        )
    assert (
        json.dumps(found.logger.env())
        == '{"PAYLOAD_LOGGER_URL": "http://sink/", "PAYLOAD_LOGGER_MODE": "all"}'
    )
