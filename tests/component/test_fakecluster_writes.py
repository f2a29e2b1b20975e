"""Writes on the fake API server through the official client, over real HTTP on loopback: create,
read, list, each patch type the client sends, the scale and status subresources, optimistic
concurrency, Status bodies, delete and finalizers.

The other resources and clients are in test_fakecluster_resources.py; injected failures, request
counts, auth, stopping and the controllers seam in test_fakecluster_server.py.
"""

import json

import pytest
from fakecluster_fixtures import NAMESPACE, Collected, Kube, config_map, deployment, status_of
from kubernetes.client import ApiException, V1Pod


@pytest.fixture
def kube():
    with Kube() as running:
        yield running


def test_create_fills_uid_timestamps_resource_version_and_generate_name(kube):
    created = kube.apps.create_namespaced_deployment(NAMESPACE, deployment("d"))
    assert created.metadata.uid and created.metadata.creation_timestamp.tzinfo is not None
    assert created.metadata.generation == 1 and created.metadata.namespace == NAMESPACE
    generated = kube.core.create_namespaced_config_map(NAMESPACE, {"metadata": {"generateName": "cm-"}})
    assert generated.metadata.name.startswith("cm-") and len(generated.metadata.name) == 8
    assert generated.metadata.generate_name == "cm-"
    assert int(generated.metadata.resource_version) > int(created.metadata.resource_version)


def test_list_selects_by_label_and_field_and_has_the_list_shape_clients_expect(kube):
    for name, tier in (("a", "web"), ("b", "db"), ("c", "web")):
        kube.core.create_namespaced_config_map(NAMESPACE, config_map(name, tier=tier))
    web = kube.core.list_namespaced_config_map(NAMESPACE, label_selector="tier=web")
    assert [item.metadata.name for item in web.items] == ["a", "c"]
    named = kube.core.list_namespaced_config_map(NAMESPACE, field_selector="metadata.name=b")
    assert [item.metadata.name for item in named.items] == ["b"]
    raw = json.loads(kube.core.list_namespaced_config_map("empty", _preload_content=False).data)
    assert raw == {
        "kind": "ConfigMapList",
        "apiVersion": "v1",
        "metadata": {"resourceVersion": "3"},
        "items": [],
    }
    raw = json.loads(kube.core.list_namespaced_config_map(NAMESPACE, _preload_content=False).data)
    assert "kind" not in raw["items"][0]  # built-in list items omit kind, as kube-apiserver's do


def test_missing_object_is_a_404_status_the_leader_election_lock_recognises(kube):
    with pytest.raises(ApiException) as missing:
        kube.apps.read_namespaced_deployment("nope", NAMESPACE)
    assert missing.value.status == 404
    assert status_of(missing.value) == {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": 'deployments.apps "nope" not found',
        "reason": "NotFound",
        "code": 404,
        "details": {"name": "nope", "group": "apps", "kind": "deployments"},
    }
    assert missing.value.headers["Content-Type"] == "application/json"


def test_create_of_a_taken_name_is_409_already_exists(kube):
    kube.core.create_namespaced_config_map(NAMESPACE, config_map("a"))
    with pytest.raises(ApiException) as taken:
        kube.core.create_namespaced_config_map(NAMESPACE, config_map("a"))
    assert (taken.value.status, status_of(taken.value)["reason"]) == (409, "AlreadyExists")


def test_replace_with_a_stale_resource_version_is_409_conflict_and_with_the_current_one_succeeds(kube):
    first = kube.core.create_namespaced_config_map(NAMESPACE, config_map("a"))
    kube.core.patch_namespaced_config_map("a", NAMESPACE, {"data": {"k": "2"}})
    first.data = {"k": "stale"}
    with pytest.raises(ApiException) as stale:
        kube.core.replace_namespaced_config_map("a", NAMESPACE, first)
    assert (stale.value.status, status_of(stale.value)["reason"]) == (409, "Conflict")
    assert "the object has been modified" in status_of(stale.value)["message"]
    current = kube.core.read_namespaced_config_map("a", NAMESPACE)
    current.data = {"k": "3"}
    assert kube.core.replace_namespaced_config_map("a", NAMESPACE, current).data == {"k": "3"}


def test_dict_patch_is_strategic_merge_merging_containers_by_name(kube):
    spec = deployment("d")
    spec["spec"]["template"]["spec"]["containers"].append({"name": "queue-proxy", "image": "qp:1"})
    kube.apps.create_namespaced_deployment(NAMESPACE, spec)
    patch = {"spec": {"template": {"spec": {"containers": [{"name": "user", "image": "user:2"}]}}}}
    patched = kube.apps.patch_namespaced_deployment("d", NAMESPACE, patch)
    images = [(container.name, container.image) for container in patched.spec.template.spec.containers]
    assert images == [("user", "user:2"), ("queue-proxy", "qp:1")]
    assert patched.metadata.generation == 2


def test_list_patch_is_json_patch_and_a_failed_test_op_is_422(kube):
    kube.core.create_namespaced_config_map(NAMESPACE, config_map("a"))
    patched = kube.core.patch_namespaced_config_map(
        "a",
        NAMESPACE,
        [{"op": "test", "path": "/data/k", "value": "v"}, {"op": "add", "path": "/data/j", "value": "w"}],
    )
    assert patched.data == {"k": "v", "j": "w"}
    with pytest.raises(ApiException) as failed:
        kube.core.patch_namespaced_config_map(
            "a", NAMESPACE, [{"op": "test", "path": "/data/k", "value": "x"}]
        )
    assert failed.value.status == 422


def test_merge_patch_replaces_lists_wholesale(kube):
    spec = deployment("d")
    spec["spec"]["template"]["spec"]["containers"].append({"name": "queue-proxy", "image": "qp:1"})
    kube.apps.create_namespaced_deployment(NAMESPACE, spec)
    patch = {"spec": {"template": {"spec": {"containers": [{"name": "user", "image": "user:2"}]}}}}
    patched = kube.apps.patch_namespaced_deployment(
        "d", NAMESPACE, patch, _content_type="application/merge-patch+json"
    )
    assert [container.name for container in patched.spec.template.spec.containers] == ["user"]


def test_patch_carrying_a_stale_resource_version_is_409(kube):
    created = kube.core.create_namespaced_config_map(NAMESPACE, config_map("a"))
    kube.core.patch_namespaced_config_map("a", NAMESPACE, {"data": {"k": "2"}})
    with pytest.raises(ApiException) as stale:
        kube.core.patch_namespaced_config_map(
            "a",
            NAMESPACE,
            {"metadata": {"resourceVersion": created.metadata.resource_version}, "data": {"k": "3"}},
        )
    assert stale.value.status == 409


def test_scale_subresource_patch_sets_replicas_bumps_generation_and_tells_deployment_watchers(kube):
    created = kube.apps.create_namespaced_deployment(NAMESPACE, deployment("d", replicas=0))
    watched = Collected(
        kube.apps.list_namespaced_deployment,
        lambda events: len(events) == 3,
        NAMESPACE,
        resource_version=created.metadata.resource_version,
    )
    scale = kube.apps.patch_namespaced_deployment_scale("d", NAMESPACE, {"spec": {"replicas": 3}})
    assert (scale.kind, scale.api_version, scale.spec.replicas) == ("Scale", "autoscaling/v1", 3)
    assert scale.status.selector == "app=d"
    # The stand-in for the Deployment controller settles status at once (docs/fake-cluster.md).
    read = kube.apps.read_namespaced_deployment_scale("d", NAMESPACE)
    assert (read.spec.replicas, read.status.replicas) == (3, 3)
    stored = kube.apps.read_namespaced_deployment("d", NAMESPACE)
    assert (stored.spec.replicas, stored.metadata.generation) == (3, 2)
    assert (stored.status.ready_replicas, stored.status.observed_generation) == (3, 2)
    # Watchers see the created Deployment settle, the scale write, then its status settle.
    seen = [
        (event["type"], event["object"].spec.replicas, event["object"].status.observed_generation)
        for event in watched.wait()
    ]
    assert seen == [("MODIFIED", 0, 1), ("MODIFIED", 3, 1), ("MODIFIED", 3, 2)]


def test_scale_write_with_a_stale_resource_version_is_409_and_negative_replicas_422(kube):
    kube.apps.create_namespaced_deployment(NAMESPACE, deployment("d"))
    old = kube.apps.read_namespaced_deployment_scale("d", NAMESPACE)
    kube.apps.patch_namespaced_deployment_scale("d", NAMESPACE, {"spec": {"replicas": 2}})
    old.spec.replicas = 5
    with pytest.raises(ApiException) as stale:
        kube.apps.replace_namespaced_deployment_scale("d", NAMESPACE, old)
    assert stale.value.status == 409
    with pytest.raises(ApiException) as invalid:
        kube.apps.patch_namespaced_deployment_scale("d", NAMESPACE, {"spec": {"replicas": -1}})
    assert invalid.value.status == 422
    assert status_of(invalid.value)["details"]["causes"][0]["field"] == "spec.replicas"


def test_invalid_deployment_is_422_naming_the_field(kube):
    with pytest.raises(ApiException) as invalid:
        kube.apps.create_namespaced_deployment(NAMESPACE, deployment("d", replicas=-1))
    assert invalid.value.status == 422
    assert status_of(invalid.value)["message"].startswith('Deployment.apps "d" is invalid: spec.replicas')


def test_status_subresource_writes_status_only_and_the_main_endpoint_leaves_it(kube):
    kube.core.create_namespaced_pod(
        NAMESPACE, {"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c"}]}}
    )
    status = {
        "status": {
            "phase": "Running",
            "podIP": "127.0.0.2",
            "conditions": [{"type": "Ready", "status": "True"}],
        }
    }
    kube.core.patch_namespaced_pod_status("p", NAMESPACE, status)
    kube.core.patch_namespaced_pod(
        "p", NAMESPACE, {"status": {"phase": "Failed"}, "metadata": {"labels": {"a": "b"}}}
    )
    pod = kube.core.read_namespaced_pod("p", NAMESPACE)
    assert (pod.status.phase, pod.status.pod_ip, pod.metadata.labels) == ("Running", "127.0.0.2", {"a": "b"})
    running = kube.core.list_namespaced_pod(NAMESPACE, field_selector="status.phase=Running")
    assert [item.metadata.name for item in running.items] == ["p"]


def test_delete_answers_the_pod_itself_and_a_status_for_a_config_map(kube):
    kube.core.create_namespaced_pod(
        NAMESPACE, {"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c"}]}}
    )
    kube.core.create_namespaced_config_map(NAMESPACE, config_map("a"))
    assert isinstance(kube.core.delete_namespaced_pod("p", NAMESPACE), V1Pod)
    deleted = kube.core.delete_namespaced_config_map("a", NAMESPACE)
    assert (deleted["status"], deleted["details"]["name"]) == ("Success", "a")  # py37: a plain dict
    assert kube.core.list_namespaced_pod(NAMESPACE).items == []


def test_finalizers_keep_a_deleted_object_until_removed(kube):
    kube.core.create_namespaced_config_map(NAMESPACE, {"metadata": {"name": "a", "finalizers": ["kpa/x"]}})
    kube.core.delete_namespaced_config_map("a", NAMESPACE)
    held = kube.core.read_namespaced_config_map("a", NAMESPACE)
    assert held.metadata.deletion_timestamp is not None
    kube.core.patch_namespaced_config_map("a", NAMESPACE, [{"op": "remove", "path": "/metadata/finalizers"}])
    assert kube.core.list_namespaced_config_map(NAMESPACE).items == []
