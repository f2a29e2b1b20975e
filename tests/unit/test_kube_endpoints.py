"""The revision's EndpointSlice: activators in proxy mode, pods in serve mode, Knative's overrides."""

import re

import pytest

from kubebackend.endpoints import (
    MANAGED_BY,
    Endpoint,
    activator_subset,
    activators_needed,
    effective_mode,
    endpoint_slice,
    revision_service,
    slice_differs,
)

ACTIVATORS = [Endpoint(f"10.0.0.{i}", f"activator-{i}") for i in range(1, 9)]


@pytest.mark.parametrize(
    ("ready", "total", "tbc", "capacity", "expected"),
    [
        pytest.param(0, 10, 200, 100, 2, id="idle revision still gets two"),
        pytest.param(10, 10, 200, 100, 3, id="100 capacity + 200 burst over 100 each"),
        pytest.param(50, 10, 0, 100, 2, id="tbc 0: activator only at zero, two"),
        pytest.param(50, 10, -1, 100, 5, id="tbc -1: sized by capacity alone"),
    ],
)
def test_activators_needed_follows_capacity_and_burst_with_a_floor_of_two(
    ready, total, tbc, capacity, expected
):
    assert activators_needed(ready, total, tbc, capacity) == expected


def test_subset_is_everyone_when_there_are_not_more_than_asked():
    assert activator_subset("web", ACTIVATORS[:2], 3) == ACTIVATORS[:2]


def test_subset_is_stable_per_revision_and_spreads_revisions_across_activators():
    first = activator_subset("web", ACTIVATORS, 2)
    assert first == activator_subset("web", list(reversed(ACTIVATORS)), 2)  # order of discovery is irrelevant
    assert len(first) == 2
    chosen = {e.ip for r in range(40) for e in activator_subset(f"rev-{r}", ACTIVATORS, 2)}
    assert len(chosen) >= 6  # 40 revisions do not all pile onto the same two activators


def test_removing_an_activator_moves_only_the_revisions_that_used_it():
    gone = ACTIVATORS[0]
    moved = 0
    for r in range(100):
        before = activator_subset(f"rev-{r}", ACTIVATORS, 2)
        after = activator_subset(f"rev-{r}", [a for a in ACTIVATORS if a != gone], 2)
        if gone not in before:
            assert before == after
        else:
            moved += 1
            assert set(before) - {gone} <= set(after)
    assert moved > 0


@pytest.mark.parametrize(
    ("wanted", "pods", "activators", "expected"),
    [
        pytest.param("serve", 2, 2, "serve", id="serve with pods"),
        pytest.param("serve", 0, 2, "proxy", id="serve with no ready pod is proxy"),
        pytest.param("proxy", 2, 2, "proxy", id="proxy with activators"),
        pytest.param("proxy", 2, 0, "serve", id="proxy with no activator but pods is serve"),
        pytest.param("proxy", 0, 0, "proxy", id="nothing ready stays proxy"),
    ],
)
def test_effective_mode_applies_knatives_overrides(wanted, pods, activators, expected):
    assert effective_mode(wanted, pods, activators) == expected


def test_slice_names_its_service_and_our_manager_and_lists_ready_endpoints_sorted():
    body = endpoint_slice(
        "shop",
        "web",
        "serve",
        [Endpoint("10.1.0.9", "web-b"), Endpoint("10.1.0.3", "web-a")],
        owner={"name": "web-kpa", "uid": "u-1"},
    )
    labels = body["metadata"]["labels"]
    assert (
        labels["kubernetes.io/service-name"]
        == "web-kpa"
        == revision_service("shop", "web")["metadata"]["name"]
    )
    assert labels["endpointslice.kubernetes.io/managed-by"] == MANAGED_BY
    assert body["addressType"] == "IPv4"
    assert [e["addresses"] for e in body["endpoints"]] == [["10.1.0.3"], ["10.1.0.9"]]
    assert body["endpoints"][0]["conditions"] == {"ready": True, "serving": True, "terminating": False}
    assert body["endpoints"][0]["targetRef"] == {"kind": "Pod", "namespace": "shop", "name": "web-a"}
    assert body["ports"] == [{"name": "http", "protocol": "TCP", "port": 8012}]
    assert body["metadata"]["ownerReferences"][0]["uid"] == "u-1"


def test_slice_differs_only_when_endpoints_ports_or_mode_change():
    pods = [Endpoint("10.1.0.3", "web-a")]
    stored = endpoint_slice("shop", "web", "serve", pods)
    stored["metadata"]["resourceVersion"] = "42"  # what the server adds does not count
    assert not slice_differs(stored, endpoint_slice("shop", "web", "serve", pods))
    assert slice_differs(
        stored, endpoint_slice("shop", "web", "serve", [*pods, Endpoint("10.1.0.4", "web-b")])
    )
    assert slice_differs(stored, endpoint_slice("shop", "web", "proxy", pods))
    assert slice_differs(None, stored)


LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")  # apimachinery's, ≤ 63 long


def test_every_label_value_the_controller_writes_is_one_the_api_server_accepts():
    bodies = [
        endpoint_slice(
            "shop", "web", "serve", [Endpoint("10.1.0.3", "web-a")], owner={"name": "web-kpa", "uid": "u"}
        ),
        revision_service("shop", "web"),
    ]
    for body in bodies:
        for key, value in body["metadata"]["labels"].items():
            assert len(value) <= 63 and LABEL_VALUE.match(value), (
                f"label {key}={value!r} is not a valid value"
            )
