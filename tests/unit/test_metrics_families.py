"""The activator's and the autoscaler's metric families, read back with prometheus-client's parser.

Names and types are the ones the hand-written text had (Knative's where Knative has the metric);
values are what was counted or what ``status()`` shows; any namespace or revision name, however
hostile, is escaped and parses back unchanged.
"""

import pytest
from prometheus_client.parser import text_string_to_metric_families

from activator.metrics import ActivatorMetrics, RevisionGauges
from autoscaler.actuator import PodInfo
from autoscaler.exposition import exposition
from autoscaler.revision import settings_from
from autoscaler.service import AutoscalerService
from autoscaler.stat import RevisionKey, Stat

ACTIVATOR_POD = frozenset({("pod_name", "act-1"), ("container_name", "activator")})
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
    metrics = ActivatorMetrics(lambda: [RevisionGauges("ns", name, 3, 2, 4, 1)], lambda: 7, pod_name="act-1")
    for code, ms in ((200, 0.5), (200, 40.0), (503, 3.0)):
        metrics.observe_request("ns", name, code, ms)
    metrics.observe_wait("ns", name, 0.0004, cold=False)
    metrics.observe_wait("ns", name, 0.3, cold=True)
    parsed = families(exposition([metrics]).decode())
    revision = {
        ("namespace_name", "ns"), ("configuration_name", name), ("revision_name", name),
        ("service_name", name), ("pod_name", "act-1"), ("container_name", "activator"),
    }  # fmt: skip

    def key(sample: str, **labels: str) -> tuple[str, frozenset[tuple[str, str]]]:
        return sample, frozenset(revision | labels.items())

    def code(c: str, **labels: str) -> dict[str, str]:
        return {"response_code": c, "response_code_class": f"{c[0]}xx", **labels}

    assert {family: kind for family, (kind, _) in parsed.items()} == {
        "activator_request_count": "counter",
        "activator_request_latencies": "histogram",
        "kpa_activator_capacity_wait_seconds": "histogram",
        "kpa_activator_cold_start_wait_seconds": "histogram",
        "activator_request_concurrency": "gauge",
        "kpa_activator_held_requests": "gauge",
        "kpa_activator_in_flight_requests": "gauge",
        "kpa_activator_revision_capacity": "gauge",
        "kpa_activator_healthy_pods": "gauge",
        "kpa_activator_stat_push_failures": "counter",
    }
    assert parsed["activator_request_count"][1] == {
        key("activator_request_count_total", **code("200")): 2,
        key("activator_request_count_total", **code("503")): 1,
    }
    latencies = parsed["activator_request_latencies"][1]
    assert latencies[key("activator_request_latencies_bucket", **code("200", le="1.0"))] == 1
    assert latencies[key("activator_request_latencies_bucket", **code("200", le="50.0"))] == 2
    assert latencies[key("activator_request_latencies_sum", **code("200"))] == pytest.approx(40.5)
    waits = parsed["kpa_activator_capacity_wait_seconds"][1]
    assert waits[key("kpa_activator_capacity_wait_seconds_bucket", le="0.001")] == 1
    assert waits[key("kpa_activator_capacity_wait_seconds_bucket", le="0.25")] == 1
    assert waits[key("kpa_activator_capacity_wait_seconds_bucket", le="0.5")] == 2
    assert waits[key("kpa_activator_capacity_wait_seconds_bucket", le="+Inf")] == 2
    assert waits[key("kpa_activator_capacity_wait_seconds_count")] == 2
    assert waits[key("kpa_activator_capacity_wait_seconds_sum")] == pytest.approx(0.3004)
    cold = parsed["kpa_activator_cold_start_wait_seconds"][1]  # only the wait that was a cold start
    assert cold[key("kpa_activator_cold_start_wait_seconds_count")] == 1
    assert cold[key("kpa_activator_cold_start_wait_seconds_sum")] == pytest.approx(0.3)
    assert parsed["activator_request_concurrency"][1] == {key("activator_request_concurrency"): 5}
    assert parsed["kpa_activator_held_requests"][1] == {key("kpa_activator_held_requests"): 3}
    assert parsed["kpa_activator_in_flight_requests"][1] == {key("kpa_activator_in_flight_requests"): 2}
    assert parsed["kpa_activator_revision_capacity"][1] == {key("kpa_activator_revision_capacity"): 4}
    assert parsed["kpa_activator_healthy_pods"][1] == {key("kpa_activator_healthy_pods"): 1}
    assert parsed["kpa_activator_stat_push_failures"][1] == {
        ("kpa_activator_stat_push_failures_total", ACTIVATOR_POD): 7
    }
    assert "activator_request_count_total" not in exposition([metrics]).decode()  # Knative's name, no suffix


def test_a_revision_without_waits_yet_has_zero_wait_histograms_so_its_first_cold_start_shows():
    """Prometheus reads a series' first value as its start: a cold start that created the series
    would be invisible to rate() and increase() (the dashboard's cold-start panels)."""
    metrics = ActivatorMetrics(lambda: [RevisionGauges("ns", "web", 0, 0, 0, 0)], pod_name="act-1")
    parsed = families(exposition([metrics]).decode())
    for family in ("kpa_activator_capacity_wait_seconds", "kpa_activator_cold_start_wait_seconds"):
        samples = {
            name: value
            for (name, labels), value in parsed[family][1].items()
            if ("revision_name", "web") in labels
        }
        assert samples[f"{family}_count"] == 0 and samples[f"{family}_sum"] == 0
    metrics.observe_wait("ns", "web", 1.5, cold=True)
    cold = families(exposition([metrics]).decode())["kpa_activator_cold_start_wait_seconds"][1]
    assert [v for (name, _), v in cold.items() if name.endswith("_count")] == [1]


class _TwoReadyPods:  # and one that is not ready yet
    def set_desired_scale(self, revision, desired):
        pass

    def desired_scale(self, revision):
        return 2

    def pods(self, revision):
        return [PodInfo(f"pod-{i}", revision, f"127.0.0.1:{i}", "", 0.0, i < 3) for i in (1, 2, 3)]

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
    parsed = families(exposition([service.metrics]).decode())
    revision = frozenset(
        {("namespace_name", "ns"), ("configuration_name", name), ("revision_name", name),
         ("service_name", name)}
    )  # fmt: skip
    gauges = {
        "autoscaler_desired_pods": row.want,
        "autoscaler_requested_pods": row.requested_pods,
        "autoscaler_actual_pods": 2,
        "autoscaler_not_ready_pods": 1,
        "autoscaler_pending_pods": 0,
        "autoscaler_terminating_pods": 0,
        "autoscaler_panic_mode": int(row.panicking),
        "autoscaler_stable_request_concurrency": row.stable_concurrency,
        "autoscaler_panic_request_concurrency": row.panic_concurrency,
        "autoscaler_target_concurrency_per_pod": 7.0,
        "autoscaler_excess_burst_capacity": row.excess_burst_capacity,
        "kpa_autoscaler_activator_in_path": int(row.mode == "proxy"),
    }
    rps_only = ("autoscaler_stable_requests_per_second", "autoscaler_panic_requests_per_second",
                "autoscaler_target_requests_per_second")  # fmt: skip
    assert {family: kind for family, (kind, _) in parsed.items()} == {
        **dict.fromkeys(gauges, "gauge"),
        **dict.fromkeys(rps_only, "gauge"),
        "kpa_autoscaler_scale_events": "counter",
        "kpa_autoscaler_scrape_failures": "counter",
        "kpa_autoscaler_stats_received": "counter",
        "kpa_autoscaler_stats_rejected": "counter",
    }
    assert {family: samples for family, (_, samples) in parsed.items() if family in gauges} == {
        family: {(family, revision): value} for family, value in gauges.items()
    }
    assert all(not parsed[family][1] for family in rps_only)  # as Knative: only the scaling metric's
    assert row.want == 4 and row.stable_concurrency == 28.0  # ceil(28 / 7): a real decision was shown
    assert parsed["kpa_autoscaler_scale_events"][1] == {  # requested 2 -> 4
        ("kpa_autoscaler_scale_events_total", revision | {("direction", "up")}): 1,
        ("kpa_autoscaler_scale_events_total", revision | {("direction", "down")}): 0,
    }
    counters = {
        "kpa_autoscaler_scrape_failures": (revision, 0),
        "kpa_autoscaler_stats_received": (frozenset(), 1),
        "kpa_autoscaler_stats_rejected": (frozenset(), 1),
    }
    for family, (labels, value) in counters.items():
        assert parsed[family][1] == {(family + "_total", labels): value}


def test_an_rps_revision_reports_knatives_requests_per_second_gauges_instead():
    service = AutoscalerService(_TwoReadyPods(), clock=lambda: 1000.0)
    ref = RevisionKey("ns", "web-00002")
    annotations = {"autoscaling.knative.dev/metric": "rps", "autoscaling.knative.dev/target": "50"}
    service.add_revision(ref, settings_from(annotations, {}, 0))
    service.record_pushed([(ref, Stat("pod-1", request_count=120.0))])
    service.decide_now(ref)
    (row,) = service.status()
    parsed = families(exposition([service.metrics]).decode())
    revision = frozenset(
        {("namespace_name", "ns"), ("configuration_name", "web"), ("revision_name", "web-00002"),
         ("service_name", "web")}
    )  # fmt: skip
    assert row.metric == "rps" and row.stable_concurrency == 120.0
    assert parsed["autoscaler_stable_requests_per_second"][1] == {
        ("autoscaler_stable_requests_per_second", revision): 120.0
    }
    assert parsed["autoscaler_target_requests_per_second"][1] == {
        ("autoscaler_target_requests_per_second", revision): row.target
    }
    assert not parsed["autoscaler_stable_request_concurrency"][1]


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


def test_an_autoscaler_snapshot_renders_as_the_service_did_and_stays_as_it_was():
    service = AutoscalerService(_TwoReadyPods(), clock=lambda: 1000.0)
    ref = RevisionKey("ns", "hello")
    service.add_revision(ref, settings_from({"autoscaling.knative.dev/target": "10"}, {}, 0))
    service.record_pushed([(ref, Stat("pod-1", average_concurrent_requests=28.0))])
    service.decide_now(ref)
    frozen = service.metrics.snapshot()
    before = exposition([service.metrics])
    assert exposition([frozen]) == before
    service.record_pushed([(RevisionKey("x", "y"), Stat("a"))])  # one more rejected, one more received
    service.add_revision(RevisionKey("ns", "other"), settings_from({}, {}, 0))
    assert exposition([frozen]) == before
    assert exposition([service.metrics]) != before
