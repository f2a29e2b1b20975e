"""The local stack scales real processes 0 → N → 0 the way Knative does."""

import json
import time

import httpx
from prometheus_client.parser import text_string_to_metric_families
from stack_fixtures import REVISION, client, row, run, running_stack, stack_text
from waiting import wait_until

from kpa.load import parse_phases, run_load


def test_idle_revision_scales_to_zero_after_grace_then_the_first_request_is_served(tmp_path):
    """Initial scale 1 → idle for a stable window (+grace) → 0 pods; a request at zero is held,
    pokes the autoscaler, and is answered by the pod started for it."""

    async def scenario():
        async with running_stack(stack_text(delay=0.0, cc=0), tmp_path) as stack:
            # The revision is idle from its start; the pod turns ready at some moment this poll
            # sees up to one interval late. So the lower bound runs from the stack's start (the
            # earliest the idle window can begin) and the upper bound from the observed ready.
            stack_started = time.monotonic()
            await wait_until(lambda: row(stack)["ready_pods"] == 1, 20, "the initial pod")
            took = await wait_until(
                lambda: row(stack)["pods"] == 0 and row(stack)["desired_pods"] == 0, 25, "scale to zero"
            )
            # Active for a 6 s stable window, then 1 s grace: never earlier, and not much later.
            assert time.monotonic() - stack_started >= 6.0
            assert took <= 16.0, took
            assert row(stack)["mode"] == "proxy"

            async with httpx.AsyncClient(timeout=20) as http:
                started = time.monotonic()
                answer = await http.get(stack.entry_url + "/", headers={"Host": "hello"})
                cold_start = time.monotonic() - started
            assert answer.status_code == 200
            assert answer.text.startswith("hello from")
            assert answer.headers["x-kpa-cold-start"] == "true"
            assert cold_start < 5.0, cold_start
            assert row(stack)["desired_pods"] >= 1 and row(stack)["ready_pods"] >= 1

    run(scenario())


def test_sustained_load_scales_up_and_never_exceeds_container_concurrency_per_pod(tmp_path):
    """8 clients in a closed loop, 200 ms per request, cc=2 and target 2 (0.7 utilization): the
    revision needs several pods; every request succeeds and no user container ever sees more than
    two requests at once (counted by the container itself)."""

    async def scenario():
        text = stack_text(delay=0.2, cc=2, annotations={"target": "2", "max-scale": "6"})
        async with running_stack(text, tmp_path) as stack:
            await wait_until(lambda: row(stack)["ready_pods"] == 1, 20, "the initial pod")
            load = client(stack)
            try:
                result = await run_load(load, parse_phases(["conc:8:12"]))
            finally:
                load.close()
            summary = result.summary()
            assert summary["failed"] == 0, summary["outcomes"]
            assert summary["requests"] > 100
            assert row(stack)["ready_pods"] >= 3, row(stack)
            ports = stack.actuator.user_container_addresses(REVISION)
            assert len(ports) >= 3
            async with httpx.AsyncClient(timeout=5) as http:
                seen = [json.loads((await http.get(f"http://{a}/_stats")).text) for a in ports.values()]
            assert max(s["max_in_flight"] for s in seen) <= 2, seen
            assert sum(s["served"] for s in seen) > 0

    run(scenario())


def test_status_and_metrics_endpoints_describe_the_revision(tmp_path):
    async def scenario():
        async with running_stack(stack_text(delay=0.0, cc=1), tmp_path) as stack:
            await wait_until(lambda: row(stack)["ready_pods"] == 1, 20, "the initial pod")
            await wait_until(
                lambda: row(stack)["want"] >= 0 and row(stack)["state"] == "active",
                10,
                "a decision with data",
            )
            token = {"Authorization": f"Bearer {stack.admin_token}"}
            async with httpx.AsyncClient(timeout=5, headers=token) as http:
                status = (await http.get(stack.admin_url + "/status")).json()
                metrics = (await http.get(stack.admin_url + "/metrics")).text
                bad_push = await http.post(stack.admin_url + "/stats", json=[{"revision": "x"}])
                good_push = await http.post(
                    stack.admin_url + "/stats",
                    json=[{"namespace": "default", "revision": "hello", "stat": {"pod_name": "activator"}}],
                )
                missing = await http.get(stack.entry_url + "/", headers={"Host": "nope"})
            (revision,) = status["revisions"]
            assert (revision["name"], revision["ready_pods"], revision["state"]) == ("hello", 1, "active")
            families = {f.name: f for f in text_string_to_metric_families(metrics)}
            hello = {"namespace_name": "default", "configuration_name": "hello", "revision_name": "hello",
                     "service_name": "hello"}  # fmt: skip
            assert [(s.labels, s.value) for s in families["autoscaler_actual_pods"].samples] == [(hello, 1)]
            also = {"autoscaler_panic_mode", "autoscaler_excess_burst_capacity", "activator_request_count"}
            assert also <= set(families)  # the embedded activator's families follow the autoscaler's
            assert bad_push.status_code == 400 and "namespace, revision, stat" in bad_push.json()["error"]
            assert good_push.json() == {"accepted": 1}
            assert missing.status_code == 404 and "unknown revision 'nope'" in missing.text

    run(scenario())
