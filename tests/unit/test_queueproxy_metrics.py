"""The queue-proxy's /metrics text, read back with prometheus-client's own parser.

Counters and latency histograms in ms by response code, for every answered request and for those the
user container answered; gauges read at scrape time; Knative's names (``revision_request_count``
without ``_total``) and labels, and any pod name, however hostile, escaped.
"""

import pytest
from prometheus_client.parser import text_string_to_metric_families

from queueproxy.metrics import RequestMetrics

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]
REVISION = {
    "namespace_name": "demo",
    "configuration_name": "web",
    "revision_name": "web-00001",
    "service_name": "web",
    "pod_name": "web-00001-a",
    "container_name": "queue-proxy",
}


def scrape(metrics: RequestMetrics) -> dict[str, Samples]:
    """family -> {(sample name, sorted labels): value}, parsed by the library."""
    return {
        family.name: {(s.name, tuple(sorted(s.labels.items()))): s.value for s in family.samples}
        for family in text_string_to_metric_families(metrics.render().decode())
    }


def labels(**extra: str) -> tuple[tuple[str, str], ...]:
    return tuple(sorted({**REVISION, **extra}.items()))


def code(c: str, **extra: str) -> tuple[tuple[str, str], ...]:
    return labels(response_code=c, response_code_class=f"{c[0]}xx", **extra)


def test_counts_by_code_histograms_and_gauges_parse_back_to_what_was_counted():
    metrics = RequestMetrics(
        "web-00001-a", lambda: [("revision_queue_depth", "Requests waiting.", 7)],
        namespace="demo", revision="web-00001",
    )  # fmt: skip
    for status, ms in [(200, 0.5), (200, 3.0), (200, 3.0), (503, 0.1), (504, 300000.0)]:
        metrics.observe(status, ms)
    for status, ms in [(200, 0.4), (200, 2.5), (200, 2.5)]:
        metrics.observe_app(status, ms)
    metrics.reject()
    families = scrape(metrics)

    # The parser reads a counter family "x" as samples "x_total"; the text keeps Knative's name.
    assert families["revision_request_count"] == {
        ("revision_request_count_total", code("200")): 3,
        ("revision_request_count_total", code("503")): 1,
        ("revision_request_count_total", code("504")): 1,
    }
    latencies = families["revision_request_latencies"]
    assert latencies[("revision_request_latencies_bucket", code("200", le="1"))] == 1  # 0.5 ms
    assert latencies[("revision_request_latencies_bucket", code("200", le="2"))] == 1
    assert latencies[("revision_request_latencies_bucket", code("200", le="5"))] == 3  # cumulative
    assert latencies[("revision_request_latencies_bucket", code("200", le="+Inf"))] == 3
    assert latencies[("revision_request_latencies_bucket", code("503", le="1"))] == 1
    assert latencies[("revision_request_latencies_bucket", code("504", le="100000"))] == 0
    assert latencies[("revision_request_latencies_bucket", code("504", le="+Inf"))] == 1  # the 300 s one
    assert latencies[("revision_request_latencies_count", code("200"))] == 3
    assert latencies[("revision_request_latencies_sum", code("200"))] == pytest.approx(6.5)
    # The user container answered three requests, all 200: no 503 or 504 among them.
    assert families["revision_app_request_count"] == {("revision_app_request_count_total", code("200")): 3}
    app = families["revision_app_request_latencies"]
    assert app[("revision_app_request_latencies_bucket", code("200", le="1"))] == 1
    assert app[("revision_app_request_latencies_sum", code("200"))] == pytest.approx(5.4)
    assert families["kpa_queue_rejected_requests"] == {("kpa_queue_rejected_requests_total", labels()): 1}
    assert families["revision_queue_depth"] == {("revision_queue_depth", labels()): 7}


def test_the_text_keeps_knatives_names_and_types_line_for_line():
    metrics = RequestMetrics("p", revision="hello")
    metrics.observe(200, 1.0)
    metrics.observe_app(200, 1.0)
    text = metrics.render().decode()
    for line in (
        "# TYPE revision_request_count counter",
        "# TYPE revision_app_request_count counter",
        "# TYPE revision_request_latencies histogram",
        "# TYPE revision_app_request_latencies histogram",
        "# TYPE kpa_queue_rejected_requests_total counter",
        'revision_request_count{configuration_name="hello",container_name="queue-proxy",namespace_name="",'
        'pod_name="p",response_code="200",response_code_class="2xx",revision_name="hello",'
        'service_name="hello"} 1.0',
    ):
        assert line + "\n" in text
    assert "revision_request_count_total" not in text and "revision_app_request_count_total" not in text
    assert text.endswith("\n")


@pytest.mark.parametrize(
    ("revision", "configuration", "service", "expected"),
    [
        ("web-00001", "", "", ("web", "web")),  # Knative's generated revision name: its configuration
        ("hello", "", "", ("hello", "hello")),  # any other name is its own configuration and service
        ("web-00001", "web", "shop", ("web", "shop")),  # SERVING_CONFIGURATION / SERVING_SERVICE win
        ("a-1234", "", "", ("a-1234", "a-1234")),  # four digits is not Knative's suffix
    ],
)
def test_configuration_and_service_names_come_from_the_config_or_the_revision_name(
    revision, configuration, service, expected
):
    names = {"namespace": "ns", "revision": revision, "configuration": configuration, "service": service}
    metrics = RequestMetrics("p", **names)
    metrics.reject()
    (sample,) = scrape(metrics)["kpa_queue_rejected_requests"]
    found = dict(sample[1])
    assert (found["configuration_name"], found["service_name"]) == expected
    assert (found["namespace_name"], found["revision_name"]) == ("ns", revision)


@pytest.mark.parametrize(
    "pod_name",
    ['pod-"a"', "back\\slash", "new\nline", 'all\\"\n\\n', "revision_request_count_total", "ünïcødé"],
    ids=["quote", "backslash", "newline", "every-escape", "a-metric-name", "unicode"],
)
def test_a_hostile_pod_name_is_escaped_and_parses_back_unchanged(pod_name):
    metrics = RequestMetrics(pod_name, lambda: [("kpa_queue_user_container_ready", "Ready.", 1.0)])
    metrics.observe(200, 1.5)
    families = scrape(metrics)
    assert set(families) == {
        "revision_request_count",
        "revision_request_latencies",
        "revision_app_request_count",
        "revision_app_request_latencies",
        "kpa_queue_rejected_requests",
        "kpa_queue_user_container_ready",
    }
    pods = {dict(labels)["pod_name"] for samples in families.values() for _, labels in samples}
    assert pods == {pod_name}
