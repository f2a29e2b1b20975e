"""The fake API server's storage rules (fakecluster.store), with time and uids passed in.

What a controller relies on: one resourceVersion counter for every type, a stale write refused
with 409, a no-op write invisible to watchers, generation moving only when spec does, status and
spec written through their own endpoints, finalizers holding a delete, and a watch from a
resourceVersion older than the kept history answered 410 Expired.
"""

import pytest
from tables import named

from fakecluster.errors import ApiError
from fakecluster.resources import CONFIGMAPS, DEPLOYMENTS, INFERENCESERVICES, LEASES, MUTATING_WEBHOOKS, PODS
from fakecluster.store import Store

NOW = "2026-01-02T03:04:05Z"


def deployment(replicas=1, **meta):
    return {"metadata": {"name": "d", **meta}, "spec": {"replicas": replicas}, "status": {"replicas": 7}}


def with_meta(obj, **fields):
    return {**obj, "metadata": {**obj["metadata"], **fields}}


def test_create_fills_server_fields_with_string_resource_versions_from_one_counter():
    store = Store()
    config, _ = store.create(CONFIGMAPS, "ns", {"metadata": {"name": "c"}}, NOW, "uid-1")
    lease, _ = store.create(LEASES, "ns", {"metadata": {"name": "l"}}, NOW, "uid-2")
    assert config["metadata"] == {"name": "c", "namespace": "ns", "uid": "uid-1", "creationTimestamp": NOW,
                                  "resourceVersion": "1"}  # fmt: skip
    assert (config["kind"], config["apiVersion"]) == ("ConfigMap", "v1")
    assert lease["metadata"]["resourceVersion"] == "2"
    assert "generation" not in config["metadata"]


def test_create_sets_generation_and_drops_status_where_the_type_has_a_status_subresource():
    store = Store()
    created, change = store.create(DEPLOYMENTS, "ns", deployment(), NOW, "u")
    assert created["metadata"]["generation"] == 1
    assert "status" not in created
    assert (change.type, change.revision, change.previous) == ("ADDED", 1, None)
    pod, _ = store.create(PODS, "ns", {"metadata": {"name": "p"}, "status": {"phase": "Running"}}, NOW, "u")
    assert pod["status"] == {"phase": "Pending"}


@pytest.mark.parametrize(
    ("label", "body", "code", "reason"),
    named(
        [
            ("a taken name", {"metadata": {"name": "c"}}, 409, "AlreadyExists"),
            ("another namespace", {"metadata": {"name": "x", "namespace": "other"}}, 400, "BadRequest"),
            ("a resourceVersion", {"metadata": {"name": "x", "resourceVersion": "5"}}, 400, "BadRequest"),
        ]
    ),
)
def test_create_refuses_a_taken_name_a_foreign_namespace_and_a_resource_version(label, body, code, reason):
    store = Store()
    store.create(CONFIGMAPS, "ns", {"metadata": {"name": "c"}}, NOW, "u")
    with pytest.raises(ApiError) as refused:
        store.create(CONFIGMAPS, "ns", body, NOW, "u")
    assert (refused.value.code, refused.value.reason) == (code, reason)


def test_update_with_a_stale_resource_version_is_a_409_conflict():
    store = Store()
    store.create(CONFIGMAPS, "ns", {"metadata": {"name": "c"}, "data": {"a": "1"}}, NOW, "u")
    store.update(
        CONFIGMAPS, "ns", "c", {"metadata": {"name": "c", "resourceVersion": "1"}, "data": {"a": "2"}}
    )
    with pytest.raises(ApiError) as refused:
        store.update(
            CONFIGMAPS, "ns", "c", {"metadata": {"name": "c", "resourceVersion": "1"}, "data": {"a": "3"}}
        )
    assert (refused.value.code, refused.value.reason) == (409, "Conflict")
    assert 'configmaps "c": the object has been modified' in refused.value.message


def test_update_without_resource_version_is_unconditional_for_built_ins_and_422_for_custom_resources():
    store = Store()
    store.create(CONFIGMAPS, "ns", {"metadata": {"name": "c"}}, NOW, "u")
    store.create(INFERENCESERVICES, "ns", {"metadata": {"name": "i"}, "spec": {}}, NOW, "u")
    updated, _ = store.update(CONFIGMAPS, "ns", "c", {"metadata": {"name": "c"}, "data": {"a": "1"}})
    assert updated["data"] == {"a": "1"}
    with pytest.raises(ApiError) as refused:
        store.update(INFERENCESERVICES, "ns", "i", {"metadata": {"name": "i"}, "spec": {"x": 1}})
    assert refused.value.code == 422
    assert "must be specified for an update" in refused.value.message


def test_no_op_update_keeps_the_resource_version_and_tells_no_watcher():
    store = Store()
    created, _ = store.create(CONFIGMAPS, "ns", {"metadata": {"name": "c"}, "data": {"a": "1"}}, NOW, "u")
    same, change = store.update(CONFIGMAPS, "ns", "c", created)
    assert change is None
    assert same["metadata"]["resourceVersion"] == "1"
    assert store.revision == 1


def test_deployment_generation_moves_on_spec_and_annotations_not_labels_or_status():
    store = Store()
    created, _ = store.create(DEPLOYMENTS, "ns", deployment(), NOW, "u")
    labelled, _ = store.update(DEPLOYMENTS, "ns", "d", with_meta(created, labels={"a": "b"}))
    assert labelled["metadata"]["generation"] == 1
    annotated, _ = store.update(DEPLOYMENTS, "ns", "d", with_meta(labelled, annotations={"a": "b"}))
    assert annotated["metadata"]["generation"] == 2
    scaled, _ = store.update(DEPLOYMENTS, "ns", "d", {**annotated, "spec": {"replicas": 3}})
    assert scaled["metadata"]["generation"] == 3
    status, _ = store.update(DEPLOYMENTS, "ns", "d", {**scaled, "status": {"replicas": 3}}, "status")
    assert status["metadata"]["generation"] == 3


def test_custom_resource_generation_moves_on_any_change_outside_metadata_and_status():
    store = Store()
    created, _ = store.create(
        INFERENCESERVICES, "ns", {"metadata": {"name": "i"}, "spec": {"a": 1}}, NOW, "u"
    )
    changed, _ = store.update(INFERENCESERVICES, "ns", "i", {**created, "spec": {"a": 2}})
    assert changed["metadata"]["generation"] == 2
    webhooks, _ = store.create(MUTATING_WEBHOOKS, None, {"metadata": {"name": "w"}, "webhooks": []}, NOW, "u")
    assert "namespace" not in webhooks["metadata"]
    changed, _ = store.update(MUTATING_WEBHOOKS, None, "w", {**webhooks, "webhooks": [{"name": "x"}]})
    assert changed["metadata"]["generation"] == 2


def test_main_endpoint_keeps_stored_status_and_status_endpoint_keeps_stored_spec():
    store = Store()
    created, _ = store.create(DEPLOYMENTS, "ns", deployment(), NOW, "u")
    with_status, _ = store.update(DEPLOYMENTS, "ns", "d", {**created, "status": {"replicas": 1}}, "status")
    main, _ = store.update(
        DEPLOYMENTS, "ns", "d", {**with_status, "spec": {"replicas": 2}, "status": {"replicas": 9}}
    )
    assert main["status"] == {"replicas": 1}
    status_write, _ = store.update(
        DEPLOYMENTS, "ns", "d", {**main, "spec": {"replicas": 5}, "status": {}}, "status"
    )
    assert status_write["spec"] == {"replicas": 2}
    assert status_write["status"] == {}


def test_update_keeps_uid_and_creation_timestamp_and_refuses_another_name():
    store = Store()
    store.create(CONFIGMAPS, "ns", {"metadata": {"name": "c"}}, NOW, "u")
    updated, _ = store.update(CONFIGMAPS, "ns", "c", {"metadata": {"name": "c", "uid": "forged"}, "data": {}})
    assert updated["metadata"]["uid"] == "u"
    assert updated["metadata"]["creationTimestamp"] == NOW
    with pytest.raises(ApiError) as refused:
        store.update(CONFIGMAPS, "ns", "c", {"metadata": {"name": "other"}})
    assert refused.value.code == 400


def test_delete_carries_the_last_state_with_a_new_resource_version():
    store = Store()
    store.create(CONFIGMAPS, "ns", {"metadata": {"name": "c"}, "data": {"a": "1"}}, NOW, "u")
    final, change = store.delete(CONFIGMAPS, "ns", "c", NOW)
    assert (change.type, final["data"], final["metadata"]["resourceVersion"]) == ("DELETED", {"a": "1"}, "2")
    with pytest.raises(ApiError) as refused:
        store.get(CONFIGMAPS, "ns", "c")
    assert refused.value.status["details"] == {"name": "c", "kind": "configmaps"}


def test_finalizers_hold_a_delete_until_the_last_one_is_removed():
    store = Store()
    store.create(CONFIGMAPS, "ns", {"metadata": {"name": "c", "finalizers": ["x"]}}, NOW, "u")
    marked, change = store.delete(CONFIGMAPS, "ns", "c", "2026-01-02T03:04:06Z")
    assert (change.type, marked["metadata"]["deletionTimestamp"]) == ("MODIFIED", "2026-01-02T03:04:06Z")
    assert store.exists(CONFIGMAPS, "ns", "c")
    _, change = store.update(
        CONFIGMAPS, "ns", "c", {**marked, "metadata": {**marked["metadata"], "finalizers": []}}
    )
    assert change.type == "DELETED"
    assert not store.exists(CONFIGMAPS, "ns", "c")


def test_delete_preconditions_are_checked():
    store = Store()
    store.create(CONFIGMAPS, "ns", {"metadata": {"name": "c"}}, NOW, "u")
    with pytest.raises(ApiError) as refused:
        store.delete(CONFIGMAPS, "ns", "c", NOW, {"uid": "other"})
    assert refused.value.code == 409


def test_changes_since_replays_only_that_resources_later_changes():
    store = Store()
    store.create(CONFIGMAPS, "ns", {"metadata": {"name": "a"}}, NOW, "u")
    store.create(LEASES, "ns", {"metadata": {"name": "l"}}, NOW, "u")
    store.create(CONFIGMAPS, "ns", {"metadata": {"name": "b"}}, NOW, "u")
    assert [change.object["metadata"]["name"] for change in store.changes_since(CONFIGMAPS, 1)] == ["b"]
    assert [change.revision for change in store.changes_since(CONFIGMAPS, 0)] == [1, 3]


def test_history_is_bounded_and_a_watch_from_before_it_is_410_expired():
    store = Store(history_limit=2)
    for name in "abcd":
        store.create(CONFIGMAPS, "ns", {"metadata": {"name": name}}, NOW, "u")
    assert [change.revision for change in store.changes_since(CONFIGMAPS, 2)] == [3, 4]
    with pytest.raises(ApiError) as refused:
        store.changes_since(CONFIGMAPS, 1)
    assert (refused.value.code, refused.value.reason) == (410, "Expired")
    assert refused.value.message == "too old resource version: 1 (2)"


def test_compact_expires_every_earlier_resource_version_but_not_the_current_one():
    store = Store()
    store.create(CONFIGMAPS, "ns", {"metadata": {"name": "a"}}, NOW, "u")
    store.compact()
    assert store.changes_since(CONFIGMAPS, 1) == []
    with pytest.raises(ApiError):
        store.changes_since(CONFIGMAPS, 0)
