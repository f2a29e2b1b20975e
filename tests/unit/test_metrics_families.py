"""The activator's and the autoscaler's metric families, read back with prometheus-client's parser.

Names and types are the ones the hand-written text had (Knative's where Knative has the metric);
values are what was counted or what ``status()`` shows; any namespace or revision name, however
hostile, is escaped and parses back unchanged.
"""

import pytest
from prometheus_client.parser import text_string_to_metric_families

from activator.metrics import ActivatorMetrics, RevisionGauges
from autoscaler.actuator import PodInfo
from autoscaler.revision import settings_from
from autoscaler.service import AutoscalerService
from autoscaler.stat import RevisionKey, Stat

HOSTILE = ['quote"d', "back\\slash", "new\nline", 'every\\"\n\\n', "ünïcødé"]
IDS = ["quote", "backslash", "newline", "every-escape", "unicode"]


def families(text: str) -> dict[str, tuple[str, dict[tuple[str, frozenset[tuple[str, str]]], float]]]:
    """family -> (type, {(sample name, labels): value})."""
    return {
        f.name: (f.type, {(s.name, frozenset(s.labels.items())): s.value for s in f.samples})
        for f in text_string_to_metric_families(text)
    }


@pytest.mark.parametrize("name", HOSTILE, ids=IDS)
def test_activator_families_count_what_happened_under_any_revision_name(name):
    metrics = ActivatorMetrics(lambda: [RevisionGauges("ns", name, 3, 2, 4, 1)], lambda: 7)
    for code in (200, 200, 503):
        metrics.count_request("ns", name, code)
    metrics.observe_wait("ns", name, 0.0004)
    metrics.observe_wait("ns", name, 0.3)
    parsed = families(metrics.render().decode())
    revision = {("namespace", "ns"), ("revision", name)}

    def key(sample: str, **labels: str) -> tuple[str, frozenset[tuple[str, str]]]:
        return sample, frozenset(revision | labels.items())

    assert {family: kind for family, (kind, _) in parsed.items()} == {
        "activator_requests": "counter",
        "activator_capacity_wait_seconds": "histogram",
        "activator_held_requests": "gauge",
        "activator_in_flight_requests": "gauge",
        "activator_revision_capacity": "gauge",
        "activator_healthy_pods": "gauge",
        "activator_stat_push_failures": "counter",
    }
    assert parsed["activator_requests"][1] == {
        key("activator_requests_total", code="200"): 2,
        key("activator_requests_total", code="503"): 1,
    }
    waits = parsed["activator_capacity_wait_seconds"][1]
    assert waits[key("activator_capacity_wait_seconds_bucket", le="0.001")] == 1
    assert waits[key("activator_capacity_wait_seconds_bucket", le="0.25")] == 1
    assert waits[key("activator_capacity_wait_seconds_bucket", le="0.5")] == 2
    assert waits[key("activator_capacity_wait_seconds_bucket", le="+Inf")] == 2
    assert waits[key("activator_capacity_wait_seconds_count")] == 2
    assert waits[key("activator_capacity_wait_seconds_sum")] == pytest.approx(0.3004)
    assert parsed["activator_held_requests"][1] == {key("activator_held_requests"): 3}
    assert parsed["activator_in_flight_requests"][1] == {key("activator_in_flight_requests"): 2}
    assert parsed["activator_revision_capacity"][1] == {key("activator_revision_capacity"): 4}
    assert parsed["activator_healthy_pods"][1] == {key("activator_healthy_pods"): 1}
    assert parsed["activator_stat_push_failures"][1] == {
        ("activator_stat_push_failures_total", frozenset()): 7
    }


class _TwoReadyPods:
    def set_desired_scale(self, revision, desired):
        pass

    def desired_scale(self, revision):
        return 2

    def pods(self, revision):
        return [PodInfo(f"pod-{i}", revision, f"127.0.0.1:{i}", "", 0.0, True) for i in (1, 2)]

    def subscribe(self, listener):
        pass


@pytest.mark.parametrize("name", HOSTILE, ids=IDS)
def test_autoscaler_families_are_the_status_rows_under_any_revision_name(name):
    service = AutoscalerService(_TwoReadyPods(), clock=lambda: 1000.0)
    ref = RevisionKey("ns", name)
    service.add_revision(ref, settings_from({"autoscaling.knative.dev/target": "10"}, {}, 0))
    service.record_pushed(
        [(ref, Stat("pod-1", average_concurrent_requests=28.0)), (RevisionKey("x", "y"), Stat("a"))]
    )
    service.decide_now(ref)
    (row,) = service.status()
    parsed = families(service.metrics_text())
    revision = frozenset({("namespace", "ns"), ("revision", name)})
    gauges = {
        "autoscaler_desired_pods": row.want,
        "autoscaler_requested_pods": row.requested_pods,
        "autoscaler_ready_pods": 2,
        "autoscaler_actual_pods": 2,
        "autoscaler_panic_mode": int(row.panicking),
        "autoscaler_stable_request_concurrency": row.stable_concurrency,
        "autoscaler_panic_request_concurrency": row.panic_concurrency,
        "autoscaler_target_concurrency_per_pod": 7.0,
        "autoscaler_excess_burst_capacity": row.excess_burst_capacity,
        "autoscaler_activator_in_path": int(row.mode == "proxy"),
    }
    assert {family: kind for family, (kind, _) in parsed.items()} == {
        **dict.fromkeys(gauges, "gauge"),
        "autoscaler_scrape_failures": "counter",
        "autoscaler_stats_received": "counter",
        "autoscaler_stats_rejected": "counter",
    }
    assert {family: samples for family, (_, samples) in parsed.items() if family in gauges} == {
        family: {(family, revision): value} for family, value in gauges.items()
    }
    assert row.want == 4 and row.stable_concurrency == 28.0  # ceil(28 / 7): a real decision was shown
    assert parsed["autoscaler_scrape_failures"][1] == {("autoscaler_scrape_failures_total", revision): 0}
    assert parsed["autoscaler_stats_received"][1] == {("autoscaler_stats_received_total", frozenset()): 1}
    assert parsed["autoscaler_stats_rejected"][1] == {("autoscaler_stats_rejected_total", frozenset()): 1}


def test_status_row_keeps_its_wire_keys():
    """`kpa status` and scripts read `desired_pods` (the pods the actuator was asked for) and `want`."""
    service = AutoscalerService(_TwoReadyPods(), clock=lambda: 1000.0)
    ref = RevisionKey("ns", "hello")
    service.add_revision(ref, settings_from({"autoscaling.knative.dev/target": "10"}, {}, 0))
    service.record_pushed([(ref, Stat("pod-1", average_concurrent_requests=28.0))])
    service.decide_now(ref)
    (row,) = service.status()
    doc = row.to_json()
    assert (doc["desired_pods"], doc["want"]) == (row.requested_pods, row.want) == (2, 4)
    assert list(doc)[:4] == ["namespace", "name", "desired_pods", "want"] and "requested_pods" not in doc

