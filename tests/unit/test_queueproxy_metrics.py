"""Prometheus text written by hand: counters by code, a cumulative latency histogram, gauges."""

from queueproxy.metrics import RequestMetrics


def test_counts_by_code_histogram_buckets_and_gauges_render_in_the_text_format():
    metrics = RequestMetrics('pod-"a"')
    for status, ms in [(200, 0.5), (200, 3.0), (200, 3.0), (503, 0.1), (504, 300000.0)]:
        metrics.observe(status, ms)
    metrics.reject()
    text = metrics.render([("revision_queue_depth", "Requests waiting.", 7)]).decode()
    labels = 'pod_name="pod-\\"a\\""'
    assert f'revision_request_count{{{labels},response_code="200",response_code_class="2xx"}} 3' in text
    assert f'revision_request_count{{{labels},response_code="503",response_code_class="5xx"}} 1' in text
    assert f'revision_request_latencies_bucket{{{labels},le="1"}} 2' in text  # 0.5 and 0.1 ms
    assert f'revision_request_latencies_bucket{{{labels},le="5"}} 4' in text  # cumulative
    assert f'revision_request_latencies_bucket{{{labels},le="100000"}} 4' in text
    assert f'revision_request_latencies_bucket{{{labels},le="+Inf"}} 5' in text  # the 300 s one
    assert f"revision_request_latencies_count{{{labels}}} 5" in text
    assert f"revision_request_latencies_sum{{{labels}}} 300006.600" in text
    assert f"queue_rejected_requests_total{{{labels}}} 1" in text
    assert "# TYPE revision_queue_depth gauge" in text
    assert f"revision_queue_depth{{{labels}}} 7" in text
    assert text.endswith("\n")
