"""Issue 12, "Done when" (1), end to end on the fake cluster with real processes: a plain Deployment
at zero gets a request, the controller scales it 0 → 1 and the held request is answered; load drives
it to N > 1 with serve mode taking over once the excess burst capacity is ≥ 0; idle, it returns to
the activators and 0 replicas (its last pods draining: the queue-proxy's 30 s quiet period, as
Knative's) — and every request sent is answered 2xx, none lost.

Installed from manifests/base by ``kube_stack`` (two controller pods electing a leader, two
activator pods, the webhook injecting the queue-proxy, config-autoscaler with a 6 s stable window
and 1 s grace); the client calls Service ``web-kpa`` through a ``ServiceProxy`` (kube-proxy's
part), one new connection per request.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from typing import Any

import pytest
from kube_load import ANSWERED, ClosedLoop
from kube_stack import HOST, KubeStack, kube_stack
from waiting import wait_until

pytestmark = pytest.mark.timeout(115)

LOAD_S = 10.0
CLIENTS = 8
# Target burst capacity 2: with cc 2 (a pod's capacity 2, target 1.4), 8 clients want 6 pods, and the
# slice leaves the activators once ready pods x 2 - 8 in flight - 2 >= 0, i.e. from 5 ready pods.
WEB = {"autoscaling.knative.dev/target-burst-capacity": "2", "autoscaling.knative.dev/max-scale": "6"}


@dataclass(frozen=True, slots=True)
class Sample:
    at: float
    replicas: int
    mode: str | None
    endpoints: tuple[str, ...]
    row: dict[str, Any] | None  # the leader's /status row for web


async def watch(stack: KubeStack, samples: list[Sample], stop: asyncio.Event) -> None:
    """What the cluster and the leader say, about four times a second, until ``stop``."""
    started = time.monotonic()
    while not stop.is_set():
        row = await asyncio.to_thread(stack.status)
        mode, endpoints = stack.slice_view()
        samples.append(Sample(time.monotonic() - started, stack.replicas(), mode, tuple(endpoints), row))
        await asyncio.sleep(0.25)


def test_a_deployment_at_zero_wakes_on_a_request_scales_with_load_to_serve_mode_and_back_to_zero(tmp_path):
    with kube_stack(tmp_path) as stack:
        proxy = stack.enrol_web(**WEB)
        assert stack.replicas() == 0 and stack.web_pods() == []
        activator_ips = set(stack.activators())

        async def scenario() -> dict[str, Any]:
            loop = ClosedLoop(proxy, HOST, clients=CLIENTS)
            woken = time.monotonic()
            first = await loop.one()
            cold_s = time.monotonic() - woken
            assert first.outcome == ANSWERED and first.status == 200, (first, stack.describe())
            assert first.cold and first.body.startswith(b"hello from"), first
            assert stack.replicas() >= 1
            pods_with_sidecar = {
                p["metadata"]["name"]: [c["name"] for c in p["spec"]["containers"]] for p in stack.web_pods()
            }
            assert all(names == ["user", "queue-proxy"] for names in pods_with_sidecar.values()), (
                pods_with_sidecar
            )

            samples: list[Sample] = []
            stop = asyncio.Event()
            watcher = asyncio.create_task(watch(stack, samples, stop))
            loaded = time.monotonic()
            tally = await loop.run(LOAD_S)
            load_s = time.monotonic() - loaded
            idle = time.monotonic()
            try:
                await wait_until(
                    lambda: (
                        stack.replicas() == 0
                        and stack.slice_view()[0] == "proxy"
                        and set(stack.slice_view()[1]) == activator_ips
                        and all(p["metadata"].get("deletionTimestamp") for p in stack.web_pods())
                    ),
                    40,
                    stack.describe,
                )
            finally:
                stop.set()
                await watcher
            to_zero_s = time.monotonic() - idle

            summary = tally.summary()
            assert tally.sent == tally.outcomes[ANSWERED] == tally.ok, summary  # none lost, all 2xx
            assert tally.retried == 0, summary  # the slice never listed nothing, nor a dead pod
            most = max(s.replicas for s in samples)
            assert most >= 2, [(s.at, s.replicas, s.mode) for s in samples]
            serving = [s for s in samples if s.mode == "serve" and len(s.endpoints) >= 2]
            assert serving, [(s.at, s.replicas, s.mode, len(s.endpoints)) for s in samples]
            assert all(ip not in activator_ips for s in serving for ip in s.endpoints)
            decided = [s.row for s in serving if s.row is not None and s.row["mode"] == "serve"]
            assert decided and all(row["excess_burst_capacity"] >= 0 for row in decided), decided
            by_pods = sum(
                n for endpoint, n in tally.endpoints.items() if endpoint.split(":")[0] not in activator_ips
            )
            by_activators = sum(tally.endpoints.values()) - by_pods
            assert by_pods > 0 and by_activators > 0, tally.endpoints  # both paths carried requests
            return {
                "cold_start_s": round(cold_s, 2),
                "load_s": round(load_s, 1),
                "requests": tally.sent + 1,
                "answered_2xx": tally.ok + 1,
                "lost": tally.sent - tally.ok,
                "retried": tally.retried,
                "max_replicas": most,
                "first_serve_at_s": round(serving[0].at, 1),
                "served_by_pods": by_pods,
                "served_by_activators": by_activators,
                "idle_to_zero_s": round(to_zero_s, 1),
                "slowest_s": summary["slowest_s"],
            }

        numbers = asyncio.run(scenario())
        print(f"\nkube deployment e2e: {json.dumps(numbers)}")
