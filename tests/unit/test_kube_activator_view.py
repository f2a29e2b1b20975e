"""What the activator holds from the cluster's objects: a revision's settings and ready pods, and its
own slot among the activators (Knative's rule: own IP's place among the sorted ready addresses)."""

from __future__ import annotations

from typing import Any

import pytest
from tables import named

from activator.config import ActivatorConfigError
from autoscaler.stat import RevisionKey
from kubebackend.activator_view import activator_slot, revision_state

KEY = RevisionKey("ml", "hello")


def pod(
    name: str,
    ip: str,
    *,
    ready: bool = True,
    created: str = "2026-01-01T00:00:00Z",
    env: dict[str, str] | None = None,
    **meta: Any,
) -> dict[str, Any]:
    queue_env = {"CONTAINER_CONCURRENCY": "3", "REVISION_TIMEOUT_SECONDS": "7"} if env is None else env
    return {
        "metadata": {
            "name": name,
            "namespace": "ml",
            "labels": {"kpa-emulator.dev/revision": "hello"},
            "creationTimestamp": created,
            **meta,
        },
        "spec": {
            "containers": [
                {"name": "user"},
                {"name": "queue-proxy", "env": [{"name": k, "value": v} for k, v in queue_env.items()]},
            ]
        },
        "status": {
            "phase": "Running",
            "podIP": ip,
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
        },
    }


def service(**annotations: str) -> dict[str, Any]:
    return {
        "kind": "Service",
        "metadata": {"name": "hello-kpa", "namespace": "ml", "annotations": annotations},
    }


def test_a_revision_with_neither_service_nor_live_pods_is_gone():
    dead = pod("a", "127.0.1.1") | {"status": {"phase": "Failed"}}
    assert revision_state(KEY, [], None) is None
    assert revision_state(KEY, [dead], None) is None


def test_at_zero_the_settings_come_from_the_services_annotations_else_knatives_defaults():
    annotated = service(
        **{"kpa-emulator.dev/container-concurrency": "4", "kpa-emulator.dev/timeout-seconds": "60"}
    )
    state = revision_state(KEY, [], annotated)
    assert state is not None
    assert (state.config.container_concurrency, state.config.timeout_seconds, state.endpoints) == (
        4,
        60.0,
        (),
    )
    plain = revision_state(KEY, [], service())
    assert plain is not None
    assert (plain.config.container_concurrency, plain.config.timeout_seconds, plain.settings_from) == (
        0,
        300.0,
        "defaults",
    )


def test_pods_settings_win_newest_ready_first_and_only_ready_pods_are_endpoints():
    pods = [
        pod("old", "127.0.1.2", created="2026-01-01T00:00:00Z"),
        pod("new", "127.0.1.10", created="2026-01-01T00:05:00Z", env={"CONTAINER_CONCURRENCY": "8"}),
        pod(
            "cold",
            "127.0.1.3",
            ready=False,
            created="2026-01-01T00:09:00Z",
            env={"CONTAINER_CONCURRENCY": "1"},
        ),
        pod("leaving", "127.0.1.4", deletionTimestamp="2026-01-01T00:10:00Z"),
        pod("other", "127.0.1.5")
        | {"metadata": {"name": "other", "labels": {"kpa-emulator.dev/revision": "x"}}},
    ]
    state = revision_state(KEY, pods, service(**{"kpa-emulator.dev/container-concurrency": "4"}))
    assert state is not None
    assert (state.config.container_concurrency, state.config.timeout_seconds, state.settings_from) == (
        8,
        300.0,
        "pod new",
    )
    assert state.endpoints == ("127.0.1.10:8012", "127.0.1.2:8012")


def test_a_bad_value_is_named_and_the_next_source_used():
    bad = pod("a", "127.0.1.1", env={"CONTAINER_CONCURRENCY": "lots"}, created="2026-01-01T00:01:00Z")
    good = pod("b", "127.0.1.2", env={"CONTAINER_CONCURRENCY": "2", "QUEUE_SERVING_PORT": "8013"})
    state = revision_state(KEY, [bad, good], None)
    assert state is not None
    assert state.config.container_concurrency == 2 and "127.0.1.2:8013" in state.endpoints
    assert state.problems and "pod ml/a" in state.problems[0] and "'lots'" in state.problems[0]
    broken = revision_state(KEY, [], service(**{"kpa-emulator.dev/timeout-seconds": "soon"}))
    assert broken is not None and broken.config.timeout_seconds == 300.0
    assert "kpa-emulator.dev/timeout-seconds" in broken.problems[0]


def test_a_revision_name_the_activator_cannot_route_is_refused_by_name():
    with pytest.raises(ActivatorConfigError, match=r"Hello\.World"):
        revision_state(RevisionKey("ml", "Hello.World"), [], service())


def endpoint(ip: str, ready: bool | None = True, pod_name: str = "") -> dict[str, Any]:
    conditions = {} if ready is None else {"ready": ready}
    return {"addresses": [ip], "conditions": conditions, "targetRef": {"kind": "Pod", "name": pod_name or ip}}


SLICES = [
    {"endpoints": [endpoint("127.0.1.2", pod_name="act-b"), endpoint("127.0.1.10", pod_name="act-a")]},
    {"endpoints": [endpoint("127.0.1.3", ready=None), endpoint("127.0.1.4", ready=False, pod_name="act-d")]},
]


@pytest.mark.parametrize(
    "label, own_ip, own_name, slot",
    named(
        [
            ("first in string order", "127.0.1.10", None, (0, 3)),
            ("ready unset counts as ready", "127.0.1.3", None, (2, 3)),
            ("found by its pod name", None, "act-b", (1, 3)),
            ("a not-ready replica is not in the list", "127.0.1.4", "act-d", (-1, 3)),
            ("unknown", "127.0.9.9", None, (-1, 3)),
        ]
    ),
)
def test_the_slot_is_the_own_address_place_among_the_sorted_ready_addresses(label, own_ip, own_name, slot):
    assert activator_slot(SLICES, own_ip, own_name) == slot


def test_no_activators_at_all_is_a_slot_of_one_using_every_pod():
    assert activator_slot([], "127.0.1.1") == (-1, 1)
