"""The queue-proxy's /metrics text, read back with prometheus-client's own parser.

Counters by code, a cumulative latency histogram in ms, gauges read at scrape time; Knative's names
(``revision_request_count`` without ``_total``) and any pod name, however hostile, escaped.
"""

import pytest
from prometheus_client.parser import text_string_to_metric_families

from queueproxy.metrics import RequestMetrics


def scrape(metrics: RequestMetrics) -> dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]]:
    """family -> {(sample name, sorted labels): value}, parsed by the library."""
    return {
        family.name: {(s.name, tuple(sorted(s.labels.items()))): s.value for s in family.samples}
        for family in text_string_to_metric_families(metrics.render().decode())
    }


def test_counts_by_code_histogram_buckets_and_gauges_parse_back_to_what_was_counted():
    metrics = RequestMetrics("hello-1", lambda: [("revision_queue_depth", "Requests waiting.", 7)])
    for status, ms in [(200, 0.5), (200, 3.0), (200, 3.0), (503, 0.1), (504, 300000.0)]:
        metrics.observe(status, ms)
    metrics.reject()
    families = scrape(metrics)
    pod = ("pod_name", "hello-1")

    def code(c: str) -> tuple[tuple[str, str], ...]:
        return (pod, ("response_code", c), ("response_code_class", f"{c[0]}xx"))

    # The parser reads a counter family "x" as samples "x_total"; the text keeps Knative's name.
    assert families["revision_request_count"] == {
        ("revision_request_count_total", code("200")): 3,
        ("revision_request_count_total", code("503")): 1,
        ("revision_request_count_total", code("504")): 1,
    }
    latencies = families["revision_request_latencies"]
    assert latencies[("revision_request_latencies_bucket", (("le", "1"), pod))] == 2  # 0.5 and 0.1 ms
    assert latencies[("revision_request_latencies_bucket", (("le", "5"), pod))] == 4  # cumulative
    assert latencies[("revision_request_latencies_bucket", (("le", "100000"), pod))] == 4
    assert latencies[("revision_request_latencies_bucket", (("le", "+Inf"), pod))] == 5  # the 300 s one
    assert latencies[("revision_request_latencies_count", (pod,))] == 5
    assert latencies[("revision_request_latencies_sum", (pod,))] == pytest.approx(300006.6)
    assert families["queue_rejected_requests"] == {("queue_rejected_requests_total", (pod,)): 1}
    assert families["revision_queue_depth"] == {("revision_queue_depth", (pod,)): 7}


def test_the_text_keeps_knatives_names_and_types_line_for_line():
    text = RequestMetrics("p").render().decode()
    assert "# TYPE revision_request_count counter\n" in text
    assert "# TYPE revision_request_latencies histogram\n" in text
    assert "# TYPE queue_rejected_requests_total counter\n" in text
    assert 'revision_request_latencies_bucket{le="1",pod_name="p"} 0.0\n' in text
    assert "revision_request_count_total" not in text
    assert text.endswith("\n")


@pytest.mark.parametrize(
    "pod_name",
    ['pod-"a"', "back\\slash", "new\nline", 'all\\"\n\\n', "revision_request_count_total", "ünïcødé"],
    ids=["quote", "backslash", "newline", "every-escape", "a-metric-name", "unicode"],
)
def test_a_hostile_pod_name_is_escaped_and_parses_back_unchanged(pod_name):
    metrics = RequestMetrics(pod_name, lambda: [("queue_user_container_ready", "Ready.", 1.0)])
    metrics.observe(200, 1.5)
    families = scrape(metrics)
    assert set(families) == {
        "revision_request_count",
        "revision_request_latencies",
        "queue_rejected_requests",
        "queue_user_container_ready",
    }
    labels = {dict(labels)["pod_name"] for samples in families.values() for _, labels in samples}
    assert labels == {pod_name}
