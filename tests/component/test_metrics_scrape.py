"""Every /metrics endpoint scraped over HTTP and read back with prometheus-client's own text parser.

The queue-proxy's metrics port, the activator's admin port and `kpa up`'s admin port (the
autoscaler's families followed by the embedded activator's), each after some traffic: the families
are exactly the documented ones (docs/metrics.md), the values are what was counted, and a hostile pod
name comes back unchanged. (The predictor's /metrics: test_predictor_metrics.)
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import textwrap
import time
from collections.abc import Callable

import httpx
import pytest
from activator_fixtures import Pod
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample
from queueproxy_fixtures import UserContainer, run, running_queue_proxy, wait_ready
from waiting import wait_until

from activator.admin import AdminApi
from activator.server import Activator
from localbackend.stack import LocalStack
from localbackend.stack_file import parse_stack

pytestmark = pytest.mark.timeout(30)

ADMIN_AUTH = {"authorization": "Bearer token"}
HOSTILE = 'pod "q"\\n\nend'  # a quote, a backslash-n, a real newline
QUEUE_PROXY_FAMILIES = {
    "revision_request_count", "revision_request_latencies", "revision_app_request_count",
    "revision_app_request_latencies", "kpa_queue_rejected_requests",
    "kpa_queue_requests_in_flight", "revision_queue_depth", "queue_average_concurrent_requests",
    "queue_average_proxied_concurrent_requests", "queue_requests_per_second",
    "queue_proxied_operations_per_second", "kpa_queue_user_container_ready", "process_uptime",
}  # fmt: skip
ACTIVATOR_FAMILIES = {
    "activator_request_count", "activator_request_latencies", "activator_request_concurrency",
    "kpa_activator_capacity_wait_seconds", "kpa_activator_cold_start_wait_seconds",
    "kpa_activator_held_requests", "kpa_activator_in_flight_requests", "kpa_activator_revision_capacity",
    "kpa_activator_healthy_pods", "kpa_activator_stat_push_failures",
}  # fmt: skip
AUTOSCALER_FAMILIES = {
    "autoscaler_desired_pods", "autoscaler_requested_pods", "autoscaler_actual_pods",
    "autoscaler_not_ready_pods", "autoscaler_pending_pods", "autoscaler_terminating_pods",
    "autoscaler_panic_mode", "autoscaler_stable_request_concurrency", "autoscaler_panic_request_concurrency",
    "autoscaler_target_concurrency_per_pod", "autoscaler_stable_requests_per_second",
    "autoscaler_panic_requests_per_second", "autoscaler_target_requests_per_second",
    "autoscaler_excess_burst_capacity", "kpa_autoscaler_activator_in_path", "kpa_autoscaler_scale_events",
    "kpa_autoscaler_scrape_failures", "kpa_autoscaler_stats_received", "kpa_autoscaler_stats_rejected",
}  # fmt: skip


class Scrape:
    """One /metrics body, parsed: family name -> its samples."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.families = {f.name: f for f in text_string_to_metric_families(text)}

    def value(self, sample: str, **labels: str) -> float:
        """The one sample named ``sample`` whose labels include ``labels``."""
        found = [s.value for s in self.samples() if s.name == sample and labels.items() <= s.labels.items()]
        assert len(found) == 1, f"{sample}{labels}: {len(found)} samples in\n{self.text}"
        return found[0]

    def total(self, sample: str) -> float:
        """The sum of every sample named ``sample``, whatever its labels."""
        return sum(s.value for s in self.samples() if s.name == sample)

    def samples(self) -> list[Sample]:
        return [s for family in self.families.values() for s in family.samples]


async def scrape_until(url: str, done: Callable[[Scrape], bool], timeout: float = 5.0) -> Scrape:
    """Scrape ``url`` until ``done`` holds: counters are updated just after a response goes out."""
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(timeout=5.0) as http:
        while True:
            scraped = Scrape((await http.get(url)).text)
            if done(scraped) or time.monotonic() > deadline:
                return scraped
            await asyncio.sleep(0.02)


def test_the_queue_proxy_metrics_port_counts_what_it_answered_under_a_hostile_pod_name():
    async def body() -> Scrape:
        async with (
            UserContainer() as user,
            running_queue_proxy(user.port, pod_name=HOSTILE, container_concurrency=2) as (proxy, ports),
        ):
            await wait_ready(proxy)
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{ports['serving_port']}") as client:
                codes = [(await client.get(path)).status_code for path in ("/", "/", "/", "/die")]
            assert codes == [200, 200, 200, 502]
            url = f"http://127.0.0.1:{ports['metrics_port']}/metrics"
            answered = "revision_request_latencies_count"
            return await scrape_until(url, lambda s: s.total(answered) == 4)

    scraped = run(body)
    assert set(scraped.families) == QUEUE_PROXY_FAMILIES
    assert {s.labels["pod_name"] for s in scraped.samples()} == {HOSTILE}
    assert scraped.families["revision_request_count"].type == "counter"
    assert scraped.value("revision_request_count_total", response_code="200", response_code_class="2xx") == 3
    assert scraped.value("revision_request_count_total", response_code="502", response_code_class="5xx") == 1
    assert scraped.value("revision_request_latencies_bucket", response_code="200", le="+Inf") == 3
    assert scraped.value("revision_request_latencies_sum", response_code="502") > 0
    # The 502 never got an answer from the user container: the app series count only the three 200s.
    app = scraped.families["revision_app_request_count"].samples
    assert [(s.labels["response_code"], s.value) for s in app] == [("200", 3)]
    assert scraped.value("revision_app_request_latencies_count", response_code="200") == 3
    assert scraped.value("kpa_queue_rejected_requests_total") == 0
    assert scraped.value("kpa_queue_user_container_ready") == 1
    assert (scraped.value("kpa_queue_requests_in_flight"), scraped.value("revision_queue_depth")) == (0, 0)
    assert scraped.value("process_uptime", container_name="queue-proxy") > 0
    assert scraped.value("process_uptime") > 0


def test_the_activator_admin_port_counts_requests_waits_and_reads_its_gauges():
    async def body() -> Scrape:
        activator = Activator()
        api = AdminApi(activator, "token")
        async with contextlib.AsyncExitStack() as cleanup:  # stops what started, however the test ends
            ports = await activator.start("127.0.0.1", 0, admin_port=0, admin_handler=api.handle)
            cleanup.push_async_callback(activator.stop)
            pod = await Pod().start()
            cleanup.push_async_callback(pod.stop)
            admin = await cleanup.enter_async_context(
                httpx.AsyncClient(base_url=f"http://127.0.0.1:{ports.admin}", headers=ADMIN_AUTH)
            )
            data = await cleanup.enter_async_context(
                httpx.AsyncClient(
                    base_url=f"http://127.0.0.1:{ports.serving}", headers={"host": "predictor-00001.ml"}
                )
            )
            await admin.put("/revisions/ml/predictor-00001", json={"container_concurrency": 2})
            # A request to the revision at zero is held until its first pod comes: a cold start.
            cold = asyncio.ensure_future(data.get("/"))
            await wait_until(lambda: activator.revision_gauges()[0].held == 1, what="the request held")
            await admin.put("/revisions/ml/predictor-00001/endpoints", json={"addresses": [pod.address]})
            assert (await cold).headers["x-kpa-cold-start"] == "true"
            warm = [await data.get("/") for _ in range(2)]
            assert [(r.status_code, r.headers["x-kpa-cold-start"]) for r in warm] == [(200, "false")] * 2
            assert (await data.get("/", headers={"host": "nobody.ml"})).status_code == 404
            url = f"http://127.0.0.1:{ports.admin}/metrics"
            counted = "activator_request_count_total"
            return await scrape_until(url, lambda s: s.value(counted, response_code="200") == 3)

    scraped = run(body)
    revision = {  # Knative's labels; the configuration and service come from the revision's name
        "namespace_name": "ml", "configuration_name": "predictor", "revision_name": "predictor-00001",
        "service_name": "predictor", "pod_name": "activator", "container_name": "activator",
    }  # fmt: skip
    assert set(scraped.families) == ACTIVATOR_FAMILIES
    assert scraped.families["activator_request_count"].type == "counter"
    assert "activator_request_count_total" not in scraped.text  # Knative's name, no suffix
    code = {"response_code": "200", "response_code_class": "2xx"}
    assert scraped.value("activator_request_count_total", **code, **revision) == 3
    assert scraped.value("activator_request_latencies_count", **code, **revision) == 3
    assert scraped.value("activator_request_count_total", response_code="404", revision_name="") == 1
    assert scraped.value("kpa_activator_capacity_wait_seconds_count", **revision) == 3
    assert scraped.value("kpa_activator_capacity_wait_seconds_bucket", le="+Inf", **revision) == 3
    # Only the request that waited for the revision's first pod is a cold start.
    assert scraped.value("kpa_activator_cold_start_wait_seconds_count", **revision) == 1
    assert scraped.value("kpa_activator_cold_start_wait_seconds_sum", **revision) > 0
    assert scraped.value("kpa_activator_healthy_pods", **revision) == 1
    assert scraped.value("kpa_activator_revision_capacity", **revision) == 2
    assert scraped.value("kpa_activator_held_requests", **revision) == 0
    assert scraped.value("activator_request_concurrency", **revision) == 0
    assert scraped.value("kpa_activator_stat_push_failures_total") == 0


def test_kpa_up_admin_port_shows_the_autoscaler_then_the_embedded_activator():
    stack_file = textwrap.dedent("""\
        config:
          allow-zero-initial-scale: 'true'
        revisions:
          - name: hello
            command: python -c 'raise SystemExit(1)'
            annotations:
              autoscaling.knative.dev/initial-scale: '0'
              autoscaling.knative.dev/target: '5'
        """)

    async def body() -> Scrape:
        stack = LocalStack(parse_stack(stack_file, "metrics-test.yaml"), port=0, admin_port=0)
        await stack.start()
        try:
            token = {"authorization": f"Bearer {stack.admin_token}"}
            stats = [
                {"namespace": "default", "revision": "hello", "stat": {"pod_name": "activator"}},
                {"namespace": "default", "revision": "gone", "stat": {"pod_name": "activator"}},
            ]
            async with httpx.AsyncClient(headers=token) as http:
                pushed = await http.post(stack.admin_url + "/stats", content=json.dumps(stats))
            assert pushed.json() == {"accepted": 2}
            scraped = await scrape_until(stack.admin_url + "/metrics", lambda s: True)
            assert stack.actuator.process_ids() == []  # initial scale 0 and no traffic: no pod started
            return scraped
        finally:
            await stack.stop()

    scraped = run(body)
    hello = {
        "namespace_name": "default", "configuration_name": "hello", "revision_name": "hello",
        "service_name": "hello",
    }  # fmt: skip
    assert set(scraped.families) == AUTOSCALER_FAMILIES | ACTIVATOR_FAMILIES
    names = list(scraped.families)
    assert names.index("kpa_autoscaler_stats_rejected") < names.index("activator_request_count")
    assert scraped.value("kpa_autoscaler_stats_received_total") == 1
    assert scraped.value("kpa_autoscaler_stats_rejected_total") == 1
    assert [s.labels for s in scraped.families["kpa_autoscaler_scrape_failures"].samples] == [hello]
    assert scraped.value("autoscaler_actual_pods", **hello) == 0
    assert scraped.value("autoscaler_target_concurrency_per_pod", **hello) == 3.5  # 5 x 0.7 utilization
    assert not scraped.families["autoscaler_target_requests_per_second"].samples  # a concurrency revision
    assert scraped.value("kpa_autoscaler_activator_in_path", **hello) == 1
    assert scraped.value("kpa_activator_revision_capacity", **hello) == 0
    assert scraped.value("kpa_activator_stat_push_failures_total") == 0
    assert "activator_request_count_total" not in scraped.text  # the stack's text keeps Knative's names
