"""The fake API server's PATCH algorithms (fakecluster.patches, fakecluster.strategic), table-driven.

These decide what a controller's patch does to a stored object: a container patched by name must
leave its siblings alone, a merge patch must replace lists wholesale, a JSON Patch whose ``test``
fails must change nothing and answer 422. Wrong here, the fake would pass code a real cluster breaks.
"""

import json

import pytest
from tables import named

from fakecluster.errors import ApiError
from fakecluster.patches import (
    JSON_PATCH,
    MERGE_PATCH,
    STRATEGIC_MERGE_PATCH,
    apply_patch,
    json_patch,
    merge_patch,
)
from fakecluster.resources import CONFIGMAPS, DEPLOYMENTS, INFERENCESERVICES
from fakecluster.strategic import merge_key, strategic_merge

DOC = {"metadata": {"name": "a", "labels": {"x": "1"}}, "spec": {"list": [1, 2], "n": 1}}


def operation(operations, *_):
    """A one-operation JSON Patch named as it reads: ``add /spec/list/-``, ``copy /a -> /b``."""
    (op,) = operations
    source = f"{op['from']} -> " if "from" in op else ""
    return f"{op['op']} {source}{op['path']}"


@pytest.mark.parametrize(
    ("operations", "expected"),
    named(
        [
            ([{"op": "add", "path": "/metadata/labels/y", "value": "2"}], {"x": "1", "y": "2"}),
            ([{"op": "remove", "path": "/metadata/labels/x"}], {}),
            ([{"op": "replace", "path": "/metadata/labels/x", "value": "9"}], {"x": "9"}),
            ([{"op": "add", "path": "/metadata/labels/a~1b", "value": "s"}], {"x": "1", "a/b": "s"}),
            (
                [{"op": "copy", "from": "/metadata/labels/x", "path": "/metadata/labels/z"}],
                {"x": "1", "z": "1"},
            ),
            ([{"op": "move", "from": "/metadata/labels/x", "path": "/metadata/labels/w"}], {"w": "1"}),
            ([{"op": "test", "path": "/metadata/labels/x", "value": "1"}], {"x": "1"}),
        ],
        operation,
    ),
)
def test_json_patch_operations_change_what_they_name(operations, expected):
    assert json_patch(DOC, operations)["metadata"]["labels"] == expected
    assert DOC["metadata"]["labels"] == {"x": "1"}  # the stored object is never changed in place


@pytest.mark.parametrize(
    ("operations", "expected"),
    named(
        [
            ([{"op": "add", "path": "/spec/list/-", "value": 3}], [1, 2, 3]),
            ([{"op": "add", "path": "/spec/list/0", "value": 0}], [0, 1, 2]),
            ([{"op": "remove", "path": "/spec/list/0"}], [2]),
            ([{"op": "replace", "path": "/spec/list/1", "value": 5}], [1, 5]),
        ],
        operation,
    ),
)
def test_json_patch_indexes_arrays_and_appends_with_dash(operations, expected):
    assert json_patch(DOC, operations)["spec"]["list"] == expected


@pytest.mark.parametrize(
    ("label", "operations", "code"),
    named(
        [
            # kopf's stale-RV guard expects 422
            ("a test that fails", [{"op": "test", "path": "/spec/n", "value": 2}], 422),
            ("replace of a missing field", [{"op": "replace", "path": "/spec/missing", "value": 2}], 422),
            ("remove past the end of a list", [{"op": "remove", "path": "/spec/list/5"}], 422),
            ("add under a missing parent", [{"op": "add", "path": "/nope/deeper", "value": 1}], 422),
            ("an unknown op", [{"op": "frobnicate", "path": "/spec"}], 400),
            ("a path without its leading slash", [{"op": "add", "path": "spec/n", "value": 1}], 400),
            ("add without a value", [{"op": "add", "path": "/spec/n"}], 400),
            ("an operation that is not in a list", {"op": "add"}, 400),
        ]
    ),
)
def test_json_patch_that_does_not_apply_is_refused_whole(label, operations, code):
    with pytest.raises(ApiError) as refused:
        json_patch(DOC, [{"op": "add", "path": "/spec/first", "value": 1}, *operations]
                   if isinstance(operations, list) else operations)  # fmt: skip
    assert refused.value.code == code


@pytest.mark.parametrize(
    ("label", "target", "patch", "expected"),
    named(
        [
            ("null deletes a key", {"a": 1, "b": 2}, {"b": None}, {"a": 1}),
            ("a list is replaced whole", {"a": [1, 2]}, {"a": [3]}, {"a": [3]}),
            ("objects merge", {"a": {"x": 1}}, {"a": {"y": 2}}, {"a": {"x": 1, "y": 2}}),
            ("an object replaces a scalar", {"a": 1}, {"a": {"y": 2}}, {"a": {"y": 2}}),
            ("a scalar replaces an object", {"a": {"x": 1}}, {"a": "s"}, {"a": "s"}),
        ]
    ),
)
def test_merge_patch_merges_objects_replaces_lists_and_deletes_on_null(label, target, patch, expected):
    assert merge_patch(target, patch) == expected


def pod_spec(*containers):
    return {"spec": {"template": {"spec": {"containers": list(containers)}}}}


USER = {"name": "user", "image": "u:1", "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
        "ports": [{"containerPort": 8080, "name": "http"}]}  # fmt: skip
QUEUE = {"name": "queue-proxy", "image": "q:1"}


@pytest.mark.parametrize(
    ("label", "patch", "expected_containers"),
    named(
        [
            (
                "one container patched by name: the other stays, it keeps its other fields",
                pod_spec({"name": "user", "image": "u:2"}),
                [{**USER, "image": "u:2"}, QUEUE],
            ),
            (
                "a new name is appended",
                pod_spec({"name": "extra", "image": "e"}),
                [USER, QUEUE, {"name": "extra", "image": "e"}],
            ),
            (
                "env merges by name inside the container",
                pod_spec({"name": "user", "env": [{"name": "B", "value": "9"}, {"name": "C", "value": "3"}]}),
                [
                    {
                        **USER,
                        "env": [
                            {"name": "A", "value": "1"},
                            {"name": "B", "value": "9"},
                            {"name": "C", "value": "3"},
                        ],
                    },
                    QUEUE,
                ],
            ),
            (
                "ports merge by containerPort",
                pod_spec({"name": "user", "ports": [{"containerPort": 9090, "name": "metrics"}]}),
                [{**USER, "ports": [*USER["ports"], {"containerPort": 9090, "name": "metrics"}]}, QUEUE],
            ),
            (
                "$patch: delete removes one item by key",
                pod_spec({"name": "queue-proxy", "$patch": "delete"}),
                [USER],
            ),
            (
                "$patch: replace replaces the whole list",
                pod_spec({"$patch": "replace"}, {"name": "only", "image": "o"}),
                [{"name": "only", "image": "o"}],
            ),
            (
                "$setElementOrder reorders",
                {
                    "spec": {
                        "template": {
                            "spec": {
                                "$setElementOrder/containers": [{"name": "queue-proxy"}, {"name": "user"}],
                                "containers": [],
                            }
                        }
                    }
                },
                [QUEUE, USER],
            ),
            (
                "null deletes a field of one container",
                pod_spec({"name": "user", "env": None}),
                [{key: v for key, v in USER.items() if key != "env"}, QUEUE],
            ),
        ]
    ),
)
def test_strategic_merge_merges_container_lists_by_key(label, patch, expected_containers):
    deployment = pod_spec(USER, QUEUE)
    merged = strategic_merge(deployment, patch, "Deployment")
    assert merged["spec"]["template"]["spec"]["containers"] == expected_containers


@pytest.mark.parametrize(
    ("label", "kind", "original", "patch", "expected"),
    named(
        [
            (
                "Service ports merge by port",
                "Service",
                {"spec": {"ports": [{"port": 80, "name": "http"}, {"port": 443, "name": "https"}]}},
                {"spec": {"ports": [{"port": 80, "targetPort": 8012}]}},
                {
                    "spec": {
                        "ports": [
                            {"port": 80, "name": "http", "targetPort": 8012},
                            {"port": 443, "name": "https"},
                        ]
                    }
                },
            ),
            (
                "finalizers merge, each kept once",
                "ConfigMap",
                {"metadata": {"finalizers": ["a"]}},
                {"metadata": {"finalizers": ["b", "a"]}},
                {"metadata": {"finalizers": ["a", "b"]}},
            ),
            (
                "$deleteFromPrimitiveList removes a finalizer",
                "ConfigMap",
                {"metadata": {"finalizers": ["a", "b"]}},
                {"metadata": {"$deleteFromPrimitiveList/finalizers": ["a"]}},
                {"metadata": {"finalizers": ["b"]}},
            ),
            (
                "Pod conditions merge by type",
                "Pod",
                {"status": {"conditions": [{"type": "Ready", "status": "False"}, {"type": "Initialized"}]}},
                {"status": {"conditions": [{"type": "Ready", "status": "True"}]}},
                {"status": {"conditions": [{"type": "Ready", "status": "True"}, {"type": "Initialized"}]}},
            ),
            (
                # as in Kubernetes
                "a list without a merge key (EndpointSlice endpoints) is replaced",
                "EndpointSlice",
                {"endpoints": [{"addresses": ["1.1.1.1"]}]},
                {"endpoints": [{"addresses": ["2.2.2.2"]}]},
                {"endpoints": [{"addresses": ["2.2.2.2"]}]},
            ),
            (
                "$patch: replace replaces a map",
                "ConfigMap",
                {"data": {"a": "1", "b": "2"}},
                {"data": {"$patch": "replace", "c": "3"}},
                {"data": {"c": "3"}},
            ),
            (
                "$patch: delete deletes a map",
                "ConfigMap",
                {"data": {"a": "1"}, "x": 1},
                {"data": {"$patch": "delete"}},
                {"x": 1},
            ),
            (
                "$retainKeys keeps only the keys it names",
                "ConfigMap",
                {"spec": {"a": 1, "b": 2}},
                {"spec": {"$retainKeys": ["a", "c"], "c": 3}},
                {"spec": {"a": 1, "c": 3}},
            ),
        ]
    ),
)
def test_strategic_merge_follows_each_kinds_merge_keys_and_directives(label, kind, original, patch, expected):
    assert strategic_merge(original, patch, kind) == expected


def test_strategic_merge_item_without_its_merge_key_is_a_400():
    with pytest.raises(ApiError) as refused:
        strategic_merge(pod_spec(USER), pod_spec({"image": "no-name"}), "Deployment")
    assert refused.value.code == 400
    assert "name" in refused.value.message


def test_merge_keys_are_found_by_field_path_not_field_name():
    assert merge_key("Deployment", ("spec", "template", "spec", "containers", "ports")) == "containerPort"
    assert merge_key("Service", ("spec", "ports")) == "port"
    assert merge_key("Deployment", ("spec", "ports")) is None


@pytest.mark.parametrize(
    ("content_type", "body", "labels"),
    named(
        [
            (JSON_PATCH, [{"op": "add", "path": "/metadata/labels/y", "value": "2"}], {"x": "1", "y": "2"}),
            (MERGE_PATCH + "; charset=utf-8", {"metadata": {"labels": {"x": None}}}, {}),
            (STRATEGIC_MERGE_PATCH, {"metadata": {"labels": {"z": "3"}}}, {"x": "1", "z": "3"}),
        ]
    ),
)
def test_patch_type_is_chosen_by_content_type(content_type, body, labels):
    patched = apply_patch(content_type, DOC, json.dumps(body).encode(), CONFIGMAPS)
    assert patched["metadata"]["labels"] == labels


@pytest.mark.parametrize(
    ("content_type", "resource"),
    named(
        [
            (STRATEGIC_MERGE_PATCH, INFERENCESERVICES),
            ("application/apply-patch+yaml", DEPLOYMENTS),
            ("", CONFIGMAPS),
        ],
        lambda content_type, resource: f"{content_type or 'no content type'} on {resource.plural}",
    ),
)
def test_patch_type_a_resource_does_not_take_is_415(content_type, resource):
    with pytest.raises(ApiError) as refused:
        apply_patch(content_type, DOC, b"{}", resource)
    assert (refused.value.code, refused.value.reason) == (415, "UnsupportedMediaType")
    assert MERGE_PATCH in refused.value.message


def test_patch_body_that_is_not_json_is_a_400():
    with pytest.raises(ApiError) as refused:
        apply_patch(MERGE_PATCH, DOC, b"{not json", CONFIGMAPS)
    assert refused.value.code == 400
