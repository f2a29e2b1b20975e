"""The fake API server as a server, through the official client over real HTTP on loopback: injected
failures, request counts, its bearer token, stopping with a watch open, the controllers seam, and
answers in milliseconds.
"""

import http.client
import time

import pytest
from fakecluster_fixtures import NAMESPACE, Collected, Kube, config_map, deployment, status_of
from kubernetes.client import ApiException
from waiting import wait_until_blocking


@pytest.fixture
def kube():
    with Kube() as running:
        yield running


def test_injected_500s_answer_the_next_matching_requests_then_stop(kube):
    kube.apps.create_namespaced_deployment(NAMESPACE, deployment("d"))
    kube.server.fail_next(2, "patch", "deployments/scale", 500)
    for _ in range(2):
        with pytest.raises(ApiException) as failed:
            kube.apps.patch_namespaced_deployment_scale("d", NAMESPACE, {"spec": {"replicas": 2}})
        assert (failed.value.status, status_of(failed.value)["reason"]) == (500, "InternalError")
    assert (
        kube.apps.read_namespaced_deployment("d", NAMESPACE).spec.replicas == 1
    )  # the failed patches did nothing
    assert (
        kube.apps.patch_namespaced_deployment_scale("d", NAMESPACE, {"spec": {"replicas": 2}}).spec.replicas
        == 2
    )


def test_injected_409_on_update_reads_as_a_conflict(kube):
    current = kube.core.create_namespaced_config_map(NAMESPACE, config_map("a"))
    kube.server.fail_next(1, "update", "configmaps", 409)
    with pytest.raises(ApiException) as conflict:
        kube.core.replace_namespaced_config_map("a", NAMESPACE, current)
    assert (conflict.value.status, status_of(conflict.value)["reason"]) == (409, "Conflict")
    kube.core.replace_namespaced_config_map("a", NAMESPACE, current)


def test_requests_are_counted_per_verb_and_resource(kube):
    kube.apps.create_namespaced_deployment(NAMESPACE, deployment("d"))
    kube.apps.read_namespaced_deployment("d", NAMESPACE)
    kube.apps.read_namespaced_deployment_scale("d", NAMESPACE)
    kube.apps.patch_namespaced_deployment_scale("d", NAMESPACE, {"spec": {"replicas": 2}})
    kube.apps.list_namespaced_deployment(NAMESPACE)
    assert kube.server.requests("get", "deployments") == 1
    assert kube.server.requests("get", "deployments/scale") == 1
    assert kube.server.requests("patch") == 1
    assert kube.server.requests(resource="deployments") == 3  # create, get, list
    assert kube.server.requests() == 5
    kube.server.cluster.faults.reset_counts()
    assert kube.server.requests() == 0


def test_a_token_server_refuses_requests_without_it_with_401():
    with Kube(token="s3cret") as kube:
        kube.core.create_namespaced_config_map(NAMESPACE, config_map("a"))  # the configuration carries it
        kube.api_client.configuration.api_key = {}
        with pytest.raises(ApiException) as refused:
            kube.core.list_namespaced_config_map(NAMESPACE)
        assert (refused.value.status, status_of(refused.value)["reason"]) == (401, "Unauthorized")


def test_server_stops_within_a_second_even_with_a_watch_open(kube):
    watched = Collected(
        kube.core.list_namespaced_config_map, lambda events: False, NAMESPACE, timeout_seconds=30
    )
    wait_until_blocking(lambda: kube.server.cluster.open_watches() == 1, what="the watch to open")
    started = time.monotonic()
    kube.server.stop()
    assert time.monotonic() - started < 1
    watched.wait(5)


def test_controllers_are_the_seam_that_settles_deployments_and_can_be_replaced():
    seen = []
    with Kube(controllers=[lambda change, cluster: seen.append((change.type, change.resource.kind))]) as kube:
        kube.apps.create_namespaced_deployment(NAMESPACE, deployment("d"))
        assert kube.apps.read_namespaced_deployment("d", NAMESPACE).status is None  # nothing settles it now
    assert seen == [("ADDED", "Deployment")]


def test_a_controller_that_raises_answers_the_write_with_a_500_status_naming_the_error():
    def broken(change, cluster):
        raise RuntimeError("kubelet stand-in broke")

    with Kube(controllers=[broken]) as kube:
        with pytest.raises(ApiException) as failed:
            kube.core.create_namespaced_config_map(NAMESPACE, config_map("a"))
        assert failed.value.status == 500
        assert (
            status_of(failed.value)["message"]
            == "Internal error occurred: RuntimeError: kubelet stand-in broke"
        )


def test_answers_take_milliseconds_not_a_delayed_ack(kube):
    """Nagle's algorithm on the server's sockets held every answer for the client's 40 ms delayed
    ACK; a benchmark counting controller requests per tick would have measured that instead."""
    kube.core.create_namespaced_config_map(NAMESPACE, config_map("a"))
    connection = http.client.HTTPConnection("127.0.0.1", kube.server.port, timeout=5)
    took = []
    try:
        for _ in range(21):
            started = time.perf_counter()
            connection.request("GET", f"/api/v1/namespaces/{NAMESPACE}/configmaps/a")
            connection.getresponse().read()
            took.append(time.perf_counter() - started)
    finally:
        connection.close()
    assert sorted(took)[10] < 0.02, f"median answer {sorted(took)[10] * 1e3:.1f} ms"
