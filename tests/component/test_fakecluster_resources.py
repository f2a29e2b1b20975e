"""The fake API server's other resources and clients, through the official client over real HTTP
on loopback: the InferenceService custom resource, EndpointSlices, Events of both APIs, the
leader-election Lease, and discovery for the dynamic client and kubectl.
"""

import json
import shutil
import subprocess
import threading

import pytest
from fakecluster_fixtures import NAMESPACE, Collected, Kube, deployment, status_of
from kubernetes import dynamic
from kubernetes.client import ApiException

from fakecluster.resources import INFERENCESERVICES

ISVC = {"group": "serving.kserve.io", "version": "v1beta1", "plural": "inferenceservices"}


@pytest.fixture
def kube():
    with Kube() as running:
        yield running


def isvc(name="m"):
    return {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {"name": name},
        "spec": {"predictor": {"model": {"modelFormat": {"name": "pytorch"}}}},
    }


def test_inference_service_custom_resource_through_custom_objects_api(kube):
    created = kube.custom.create_namespaced_custom_object(namespace=NAMESPACE, body=isvc(), **ISVC)
    assert created["metadata"]["generation"] == 1 and "status" not in created
    listed = kube.custom.list_namespaced_custom_object(namespace=NAMESPACE, **ISVC)
    assert listed["kind"] == "InferenceServiceList"
    assert listed["items"][0]["kind"] == "InferenceService"  # custom-resource list items carry kind
    patched = kube.custom.patch_namespaced_custom_object(
        name="m",
        namespace=NAMESPACE,
        body={"metadata": {"annotations": {"serving.kserve.io/autoscalerClass": "external"}}},
        **ISVC,
    )
    assert patched["metadata"]["annotations"] == {"serving.kserve.io/autoscalerClass": "external"}
    assert patched["metadata"]["generation"] == 1  # metadata only: generation stays
    with_status = kube.custom.patch_namespaced_custom_object_status(
        name="m", namespace=NAMESPACE, body={"status": {"url": "http://m.ns"}}, **ISVC
    )
    assert with_status["status"] == {"url": "http://m.ns"}
    body = kube.custom.get_namespaced_custom_object(name="m", namespace=NAMESPACE, **ISVC)
    body["spec"]["predictor"]["minReplicas"] = 0
    del body["metadata"]["resourceVersion"]
    with pytest.raises(ApiException) as unconditional:
        kube.custom.replace_namespaced_custom_object(name="m", namespace=NAMESPACE, body=body, **ISVC)
    assert unconditional.value.status == 422  # a custom resource's PUT must carry resourceVersion


def test_strategic_merge_patch_on_a_custom_resource_is_415(kube):
    kube.custom.create_namespaced_custom_object(namespace=NAMESPACE, body=isvc(), **ISVC)
    with pytest.raises(ApiException) as refused:
        kube.custom.patch_namespaced_custom_object(
            name="m",
            namespace=NAMESPACE,
            body={"spec": {}},
            _content_type="application/strategic-merge-patch+json",
            **ISVC,
        )
    assert (refused.value.status, status_of(refused.value)["reason"]) == (415, "UnsupportedMediaType")


def test_custom_resource_watch_yields_plain_dicts(kube):
    watched = Collected(
        kube.custom.list_namespaced_custom_object,
        lambda events: len(events) == 1,
        namespace=NAMESPACE,
        **ISVC,
    )
    kube.custom.create_namespaced_custom_object(namespace=NAMESPACE, body=isvc("w"), **ISVC)
    (event,) = watched.wait()
    assert event["type"] == "ADDED" and event["object"]["metadata"]["name"] == "w"


def test_a_controller_writes_status_of_a_custom_resource_too(kube):
    kube.custom.create_namespaced_custom_object(namespace=NAMESPACE, body=isvc(), **ISVC)
    kube.server.cluster.write_status(INFERENCESERVICES, NAMESPACE, "m", {"url": "http://m.ns"})
    assert kube.custom.get_namespaced_custom_object(name="m", namespace=NAMESPACE, **ISVC)["status"] == {
        "url": "http://m.ns"
    }


def test_endpoint_slices_leases_and_events_of_both_apis_are_stored(kube):
    kube.discovery.create_namespaced_endpoint_slice(
        NAMESPACE,
        {
            "metadata": {"name": "r-1", "labels": {"kubernetes.io/service-name": "r"}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": ["127.0.0.2"], "conditions": {"ready": True}}],
            "ports": [{"port": 8012}],
        },
    )
    slices = kube.discovery.list_namespaced_endpoint_slice(
        NAMESPACE, label_selector="kubernetes.io/service-name=r"
    )
    assert slices.items[0].endpoints[0].addresses == ["127.0.0.2"]
    kube.core.create_namespaced_event(
        NAMESPACE,
        {
            "metadata": {"name": "d.1"},
            "involvedObject": {"kind": "Deployment", "name": "d", "namespace": NAMESPACE},
            "reason": "Scaled",
            "message": "0 -> 1",
            "type": "Normal",
        },
    )
    assert (
        kube.core.list_namespaced_event(NAMESPACE, field_selector="reason=Scaled").items[0].message
        == "0 -> 1"
    )
    kube.events.create_namespaced_event(
        NAMESPACE,
        {
            "metadata": {"name": "d.2"},
            "eventTime": "2026-01-02T03:04:05.000001Z",
            "reportingController": "kpa",
            "reportingInstance": "kpa-0",
            "action": "Scale",
            "reason": "Scaled",
            "type": "Normal",
            "regarding": {"kind": "Deployment", "name": "d"},
        },
    )
    assert kube.events.read_namespaced_event("d.2", NAMESPACE).event_time.microsecond == 1


def test_official_lease_lock_elects_a_leader_who_steps_down_when_renewals_fail(kube):
    from kubernetes.leaderelection import electionconfig, leaderelection
    from kubernetes.leaderelection.resourcelock.leaselock import LeaseLock

    leading, stopped = threading.Event(), threading.Event()
    config = electionconfig.Config(
        LeaseLock("kpa", NAMESPACE, "controller-0"),
        lease_duration=3,
        renew_deadline=2,
        retry_period=1,
        onstarted_leading=leading.set,
        onstopped_leading=stopped.set,
    )
    election = threading.Thread(target=leaderelection.LeaderElection(config).run, daemon=True)
    election.start()
    assert leading.wait(5), "the LeaseLock never took the lease"
    lease = kube.coordination.read_namespaced_lease("kpa", NAMESPACE)
    assert lease.spec.holder_identity == "controller-0"
    raw = json.loads(kube.coordination.read_namespaced_lease("kpa", NAMESPACE, _preload_content=False).data)
    assert (
        raw["spec"]["renewTime"].endswith("Z") and len(raw["spec"]["renewTime"]) == 27
    )  # MicroTime, as stored
    kube.server.fail_next(100, "update", "leases", 500)
    assert stopped.wait(6), "the leader kept leading though it could not renew"
    election.join(5)


def test_discovery_serves_the_dynamic_client(kube, tmp_path):
    client = dynamic.DynamicClient(kube.api_client, cache_file=str(tmp_path / "discovery.json"))
    kube.apps.create_namespaced_deployment(NAMESPACE, deployment("d"))
    deployments = client.resources.get(api_version="apps/v1", kind="Deployment")
    assert [item.metadata.name for item in deployments.get(namespace=NAMESPACE).items] == ["d"]
    services = client.resources.get(api_version="serving.kserve.io/v1beta1", kind="InferenceService")
    assert services.namespaced


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
def test_kubectl_lists_and_reads_through_discovery(kube, tmp_path):
    kube.apps.create_namespaced_deployment(NAMESPACE, deployment("d"))
    command = [
        "kubectl",
        "--server",
        kube.server.url,
        "--cache-dir",
        str(tmp_path),
        "--namespace",
        NAMESPACE,
        "--request-timeout",
        "5s",
    ]
    listed = subprocess.run(
        [*command, "get", "deploy", "-o", "name"], capture_output=True, text=True, timeout=30
    )
    assert listed.stdout.strip() == "deployment.apps/d", listed.stderr
    read = subprocess.run(
        [*command, "get", "deployment", "d", "-o", "json"], capture_output=True, text=True, timeout=30
    )
    assert json.loads(read.stdout)["spec"]["replicas"] == 1, read.stderr
