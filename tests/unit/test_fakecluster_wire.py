"""The fake API server's pure wire rules: request paths, validation, the Scale view, what a watcher
sees of a change, fault rules and discovery (fakecluster.paths, validation, scale, watch_events,
faults, discovery), table-driven.
"""

import json

import pytest
from tables import named

from fakecluster import discovery, paths, validation, watch_events
from fakecluster.errors import ApiError
from fakecluster.faults import Faults
from fakecluster.resources import (
    CONFIGMAPS,
    DEPLOYMENTS,
    ENDPOINTSLICES,
    EVENTS_V1,
    INFERENCESERVICES,
    LEASES,
    MUTATING_WEBHOOKS,
    PODS,
    SERVICES,
)
from fakecluster.scale import scale_of, scaled
from fakecluster.selectors import label_matcher
from fakecluster.store import Change


@pytest.mark.parametrize(
    ("path", "target"),
    named(
        [
            ("/api/v1/namespaces/ns/pods", (PODS, "ns", None, None)),
            ("/api/v1/pods", (PODS, None, None, None)),
            ("/api/v1/namespaces/ns/pods/p/status", (PODS, "ns", "p", "status")),
            ("/apis/apps/v1/namespaces/ns/deployments/d/scale", (DEPLOYMENTS, "ns", "d", "scale")),
            ("/apis/apps/v1/deployments", (DEPLOYMENTS, None, None, None)),
            ("/apis/events.k8s.io/v1/namespaces/ns/events", (EVENTS_V1, "ns", None, None)),
            (
                "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/w",
                (MUTATING_WEBHOOKS, None, "w", None),
            ),
            (
                "/apis/serving.kserve.io/v1beta1/namespaces/ns/inferenceservices/i/status",
                (INFERENCESERVICES, "ns", "i", "status"),
            ),
        ]
    ),
)
def test_paths_name_resource_namespace_name_and_subresource(path, target):
    parsed = paths.parse(path)
    assert (parsed.resource, parsed.namespace, parsed.name, parsed.subresource) == target


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/namespaces/ns/serviceaccounts",  # not served
        "/apis/apps/v1/deployments/d",  # a namespaced object outside a namespace
        "/apis/apps/v1/namespaces/ns/deployments/d/log",  # no such subresource
        "/api/v1/namespaces/ns/configmaps/c/status",  # configmaps have none
        "/apis/admissionregistration.k8s.io/v1/namespaces/ns/mutatingwebhookconfigurations",  # cluster-scoped
        "/apis/apps/v2/namespaces/ns/deployments",
        "/nothing",
    ],
)
def test_paths_the_fake_does_not_serve_are_404_status(path):
    with pytest.raises(ApiError) as refused:
        paths.parse(path)
    assert (refused.value.code, refused.value.reason) == (404, "NotFound")


DEPLOYMENT = {
    "metadata": {"name": "d"},
    "spec": {
        "replicas": 1,
        "selector": {"matchLabels": {"app": "d"}},
        "template": {"metadata": {"labels": {"app": "d"}}, "spec": {"containers": [{"name": "c"}]}},
    },
}
SPEC = DEPLOYMENT["spec"]


@pytest.mark.parametrize(
    ("label", "resource", "obj", "field"),
    named(
        [
            ("no name", CONFIGMAPS, {"metadata": {}}, "metadata.name"),
            ("a name in upper case", CONFIGMAPS, {"metadata": {"name": "Upper_Case"}}, "metadata.name"),
            (
                "a Service name starting with a digit",
                SERVICES,
                {"metadata": {"name": "1starts-with-digit"}},
                "metadata.name",
            ),
            (
                "a label value over 63 characters",
                CONFIGMAPS,
                {"metadata": {"name": "c", "labels": {"k": "x" * 64}}},
                "metadata.labels[k]",
            ),
            (
                "negative replicas",
                DEPLOYMENTS,
                {**DEPLOYMENT, "spec": {**DEPLOYMENT["spec"], "replicas": -1}},
                "spec.replicas",
            ),
            (
                "a selector the template's labels do not match",
                DEPLOYMENTS,
                {**DEPLOYMENT, "spec": {**SPEC, "selector": {"matchLabels": {"app": "x"}}}},
                "spec.template.metadata.labels",
            ),
            (
                "a Deployment without a selector",
                DEPLOYMENTS,
                {"metadata": {"name": "d"}, "spec": {"template": SPEC["template"]}},
                "spec.selector",
            ),
            (
                "a Pod without containers",
                PODS,
                {"metadata": {"name": "p"}, "spec": {"containers": []}},
                "spec.containers",
            ),
            (
                "an EndpointSlice without addressType",
                ENDPOINTSLICES,
                {"metadata": {"name": "s"}, "endpoints": []},
                "addressType",
            ),
            (
                "an endpoint without addresses",
                ENDPOINTSLICES,
                {"metadata": {"name": "s"}, "addressType": "IPv4", "endpoints": [{"addresses": []}]},
                "endpoints[0].addresses",
            ),
            (
                "a Service port 0",
                SERVICES,
                {"metadata": {"name": "s"}, "spec": {"ports": [{"port": 0}]}},
                "spec.ports[0].port",
            ),
            (
                "a webhook without sideEffects",
                MUTATING_WEBHOOKS,
                {"metadata": {"name": "w"}, "webhooks": [{"name": "w"}]},
                "webhooks[0].sideEffects",
            ),
        ]
    ),
)
def test_obviously_bad_objects_are_422_invalid_naming_the_field(label, resource, obj, field):
    with pytest.raises(ApiError) as refused:
        validation.checked(resource, obj)
    assert (refused.value.code, refused.value.reason) == (422, "Invalid")
    assert field in [cause["field"] for cause in refused.value.details["causes"]]
    assert f'"{obj["metadata"].get("name", "")}" is invalid: ' in refused.value.message
    assert f"{field}: " in refused.value.message


@pytest.mark.parametrize(
    ("label", "obj"),
    named(
        [
            ("a list", [1]),
            ("metadata that is not an object", {"metadata": "x"}),
            ("another kind", {"kind": "Pod", "metadata": {"name": "c"}}),
            ("another apiVersion", {"apiVersion": "v2", "metadata": {"name": "c"}}),
        ]
    ),
)
def test_a_body_that_is_not_this_kind_of_object_is_a_400(label, obj):
    with pytest.raises(ApiError) as refused:
        validation.checked(CONFIGMAPS, obj)
    assert refused.value.code == 400


@pytest.mark.parametrize(
    ("sent", "stored"),
    named(
        [
            ("2026-01-02T03:04:05.000006Z", "2026-01-02T03:04:05.000006Z"),
            ("2026-01-02T03:04:05.123456+00:00", "2026-01-02T03:04:05.123456Z"),  # py37's LeaseLock sends it
            ("2026-01-02T05:04:05.123456+02:00", "2026-01-02T03:04:05.123456Z"),
        ],
        lambda sent, stored: f"{sent} is stored as {stored}",
    ),
)
def test_micro_times_are_stored_in_utc_with_six_digits(sent, stored):
    lease = {"metadata": {"name": "l"}, "spec": {"renewTime": sent, "holderIdentity": "a"}}
    assert validation.checked(LEASES, lease)["spec"]["renewTime"] == stored


def test_a_micro_time_without_its_six_digit_fraction_is_a_400():
    with pytest.raises(ApiError) as refused:
        validation.checked(LEASES, {"metadata": {"name": "l"}, "spec": {"renewTime": "2026-01-02T03:04:05Z"}})
    assert refused.value.code == 400
    assert "spec.renewTime" in refused.value.message


def stored_deployment(**status):
    return {
        **DEPLOYMENT,
        "metadata": {
            "name": "d",
            "namespace": "ns",
            "uid": "u",
            "resourceVersion": "7",
            "creationTimestamp": "2026-01-02T03:04:05Z",
            "generation": 3,
        },
        "status": status,
    }


def test_scale_view_carries_the_deployments_identity_replicas_and_selector_string():
    scale = scale_of(stored_deployment(replicas=2))
    assert scale == {
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": "d",
            "namespace": "ns",
            "uid": "u",
            "resourceVersion": "7",
            "creationTimestamp": "2026-01-02T03:04:05Z",
        },
        "spec": {"replicas": 1},
        "status": {"replicas": 2, "selector": "app=d"},
    }
    assert scale_of(stored_deployment())["status"]["replicas"] == 0  # always present: py37 requires it


def test_scale_write_changes_only_replicas_and_carries_its_resource_version_as_precondition():
    updated = scaled(stored_deployment(), {"metadata": {"resourceVersion": "6"}, "spec": {"replicas": 4}})
    assert updated["spec"] == {**DEPLOYMENT["spec"], "replicas": 4}
    assert updated["metadata"]["resourceVersion"] == "6"
    assert scaled(stored_deployment(), {"spec": {"replicas": 0}})["metadata"]["resourceVersion"] == ""


@pytest.mark.parametrize(
    ("label", "replicas"),
    named([("negative", -1), ("a string", "3"), ("null", None), ("a boolean", True)]),
)
def test_scale_to_anything_but_a_whole_number_is_422(label, replicas):
    with pytest.raises(ApiError) as refused:
        scaled(stored_deployment(), {"spec": {"replicas": replicas}})
    assert refused.value.code == 422
    assert refused.value.message.startswith('Scale.autoscaling "d" is invalid: spec.replicas')


def change(kind, labels, previous_labels=None, namespace="ns"):
    def obj(with_labels):
        return {
            "metadata": {"name": "o", "namespace": namespace, "labels": with_labels, "resourceVersion": "9"}
        }

    return Change(kind, CONFIGMAPS, obj(labels), None if previous_labels is None else obj(previous_labels), 9)


@pytest.mark.parametrize(
    ("label", "committed", "seen"),
    named(
        [
            ("added inside the selection", change("ADDED", {"a": "1"}), "ADDED"),
            ("added outside it", change("ADDED", {"a": "2"}), None),
            ("modified inside it", change("MODIFIED", {"a": "1"}, {"a": "1"}), "MODIFIED"),
            ("modified into it", change("MODIFIED", {"a": "1"}, {"a": "2"}), "ADDED"),
            ("modified out of it", change("MODIFIED", {"a": "2"}, {"a": "1"}), "DELETED"),
            ("modified outside it", change("MODIFIED", {"a": "2"}, {"a": "2"}), None),
            ("deleted inside it", change("DELETED", {"a": "1"}, {"a": "1"}), "DELETED"),
            ("added in another namespace", change("ADDED", {"a": "1"}, namespace="other"), None),
        ]
    ),
)
def test_watchers_see_changes_through_their_namespace_and_selector(label, committed, seen):
    event = watch_events.seen_as(committed, "ns", lambda obj: label_matcher("a=1")(obj["metadata"]["labels"]))
    assert (event and event["type"]) == seen


def test_an_object_leaving_the_selection_is_deleted_as_it_was_with_the_new_resource_version():
    event = watch_events.seen_as(
        change("MODIFIED", {"a": "2"}, {"a": "1"}), None, lambda obj: obj["metadata"]["labels"] == {"a": "1"}
    )
    assert event["object"]["metadata"]["labels"] == {"a": "1"}
    assert event["object"]["metadata"]["resourceVersion"] == "9"


def test_watch_events_are_one_compact_json_line_each():
    line = watch_events.line(watch_events.bookmark(PODS, 12))
    expected = {
        "type": "BOOKMARK",
        "object": {"kind": "Pod", "apiVersion": "v1", "metadata": {"resourceVersion": "12"}},
    }
    assert line == json.dumps(expected).replace(" ", "").encode() + b"\n"


def test_injected_failures_match_verb_and_resource_and_run_out():
    faults = Faults()
    faults.fail_next(2, "patch", "deployments/scale", 409)
    assert faults.take("patch", "deployments", "d") is None
    assert faults.take("get", "deployments/scale", "d") is None
    first = faults.take("patch", "deployments/scale", "d")
    assert (first.code, first.reason) == (409, "Conflict")
    assert faults.take("patch", "deployments/scale", "d").code == 409
    assert faults.take("patch", "deployments/scale", "d") is None
    assert faults.count("patch") == 4
    assert faults.count(resource="deployments/scale") == 4
    assert faults.count() == 5


@pytest.mark.parametrize(
    ("label", "times", "verb", "code"),
    named(
        [
            ("an unknown verb", 1, "frob", 500),
            ("a code it cannot answer", 1, "get", 418),
            ("no times", 0, "get", 500),
        ]
    ),
)
def test_a_fault_the_fake_cannot_inject_is_refused_naming_the_argument(label, times, verb, code):
    with pytest.raises(ValueError, match="fail_next"):
        Faults().fail_next(times, verb, "*", code)


def test_discovery_lists_every_served_group_and_scale_as_autoscaling_v1():
    names = [group["name"] for group in discovery.groups()["groups"]]
    assert names == [
        "apps",
        "events.k8s.io",
        "discovery.k8s.io",
        "coordination.k8s.io",
        "admissionregistration.k8s.io",
        "serving.kserve.io",
    ]
    apps = {entry["name"]: entry for entry in discovery.resources("apps", "v1")["resources"]}
    assert apps["deployments/scale"]["group"] == "autoscaling"
    assert apps["deployments/scale"]["kind"] == "Scale"
    assert apps["deployments"]["shortNames"] == ["deploy"]
    assert discovery.resources("apps", "v2") is None
    core = {entry["name"] for entry in discovery.resources("", "v1")["resources"]}
    assert {"pods", "pods/status", "services", "configmaps", "events"} <= core
