"""The fake cluster's kubelet stand-in: Deployments get pods, pods run as local processes on their own
loopback addresses, readiness follows the probe, deletes are graceful (preStop, SIGTERM, SIGKILL
after the grace period), and a Service's EndpointSlice follows its pods — all seen through the
official client, as a controller on a cluster would see it.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from fakecluster_fixtures import NAMESPACE, Collected, Kube, with_node
from waiting import wait_until_blocking

from fakecluster.kubelet import Kubelet
from fakecluster.patches import json_patch
from kubebackend.sidecar import SidecarSpec, sidecar_patch

APP = str(Path(__file__).with_name("fake_pod_app.py"))
START_S = 15.0  # a pod's processes start and pass a 1 s probe well within this on a loaded machine


def app_container(marks: Path, **overrides: Any) -> dict[str, Any]:
    container = {
        "name": "app",
        "image": "fake-pod-app:1",  # ignored: the command runs as a local process
        "command": [sys.executable, APP],
        "args": ["0.0.0.0", "8080", str(marks)],
        "env": [
            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
            {"name": "POD_HOST_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.hostIP"}}},
            {"name": "GREETING", "value": "$(POD_NAME) listens on localhost, its node is $(POD_HOST_IP)"},
        ],
        "ports": [{"name": "http", "containerPort": 8080}],
        "readinessProbe": {
            "httpGet": {
                "path": "/ready",
                "port": "http",
                "httpHeaders": [{"name": "X-Probe", "value": "kubelet"}],
            },
            "periodSeconds": 1,
        },
        "lifecycle": {"preStop": {"httpGet": {"path": "/prestop", "port": 8080}}},
    }
    container.update(overrides)
    return container


def deployment(name: str, replicas: int, *containers: dict[str, Any], grace: int = 10) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"terminationGracePeriodSeconds": grace, "containers": list(containers)},
            },
        },
    }


def pods(kube: Kube, app: str) -> list[dict[str, Any]]:
    answer = kube.core.list_namespaced_pod(NAMESPACE, label_selector=f"app={app}", _preload_content=False)
    return json.loads(answer.data)["items"]


def ready(pod: dict[str, Any]) -> bool:
    conditions = pod.get("status", {}).get("conditions") or []
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def running(kube: Kube, app: str) -> list[dict[str, Any]]:
    return [p for p in pods(kube, app) if p["status"].get("phase") == "Running" and p["status"].get("podIP")]


def pids(pod: dict[str, Any]) -> list[int]:
    statuses = pod["status"].get("containerStatuses") or []
    return [int(s["containerID"].rsplit("/", 1)[1]) for s in statuses if s.get("containerID")]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with contextlib.suppress(OSError):  # a zombie not yet reaped counts as gone
        if Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1].startswith("Z"):
            return False
    return True


def state(kubelet: Kubelet, kube: Kube, app: str):
    """For timeouts: each pod's phase, readiness, IP, and the containers' output."""

    def describe() -> str:
        lines = [
            f"{p['metadata']['name']} {p['status'].get('phase')} ready={ready(p)} {p['status'].get('podIP')}"
            for p in pods(kube, app)
        ]
        logs = "".join(kubelet.logs(NAMESPACE, p["metadata"]["name"]) for p in pods(kube, app))
        return "; ".join(lines) + "\n" + logs[-3000:]

    return describe


def get(ip: str, port: int, path: str = "/") -> bytes:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(f"http://{ip}:{port}{path}", timeout=5) as answer:
        return answer.read()


def answers(ip: str, port: int) -> bool:
    try:
        return bool(get(ip, port))
    except OSError:
        return False


def test_a_deployment_scaled_to_two_runs_two_pods_on_their_own_addresses_ready_once_the_probe_passes(
    tmp_path,
):
    with with_node() as (kubelet, kube):
        kube.apps.create_namespaced_deployment(NAMESPACE, deployment("web", 1, app_container(tmp_path)))
        kube.apps.patch_namespaced_deployment_scale("web", NAMESPACE, {"spec": {"replicas": 2}})
        describe = state(kubelet, kube, "web")
        wait_until_blocking(lambda: len(running(kube, "web")) == 2, START_S, describe)
        up = running(kube, "web")
        ips = sorted(p["status"]["podIP"] for p in up)
        assert len(set(ips)) == 2 and all(ip.startswith("127.0.") and ip != "127.0.0.1" for ip in ips), ips
        wait_until_blocking(lambda: all(answers(ip, 8080) for ip in ips), START_S, describe)

        time.sleep(1.5)  # the behaviour under test: probes keep failing (503), so nobody is Ready
        assert not any(ready(p) for p in pods(kube, "web")), describe()
        (tmp_path / "ready").write_text("")
        wait_until_blocking(lambda: sum(ready(p) for p in pods(kube, "web")) == 2, 5.0, describe)
        status = kube.apps.read_namespaced_deployment_status("web", NAMESPACE).status
        assert (status.replicas, status.ready_replicas, status.available_replicas) == (2, 2, 2)

        for pod in running(kube, "web"):
            ip, name = pod["status"]["podIP"], pod["metadata"]["name"]
            shown = json.loads(get(ip, 8080))
            assert shown["local"] == [ip, 8080]  # "0.0.0.0" in its args meant the pod's own address
            assert shown["env"]["KPA_POD_IP"] == shown["env"]["POD_IP"] == ip
            assert shown["env"]["GREETING"] == f"{name} listens on {ip}, its node is 127.0.0.1"
            assert pod["spec"]["nodeName"] == "fake-node" and pod["status"]["hostIP"] == "127.0.0.1"


def test_scaling_to_zero_marks_pods_terminating_runs_prestop_then_sigterm_and_leaves_no_process(tmp_path):
    (tmp_path / "ready").write_text("")
    with with_node() as (kubelet, kube):
        kube.apps.create_namespaced_deployment(NAMESPACE, deployment("web", 2, app_container(tmp_path)))
        describe = state(kubelet, kube, "web")
        wait_until_blocking(lambda: sum(ready(p) for p in pods(kube, "web")) == 2, START_S, describe)
        before = running(kube, "web")
        names = sorted(p["metadata"]["name"] for p in before)
        processes = [pid for pod in before for pid in pids(pod)]
        gone = Collected(
            kube.core.list_namespaced_pod,
            lambda events: sum(e["type"] == "DELETED" for e in events) == 2,
            NAMESPACE,
            resource_version=kube.core.list_namespaced_pod(NAMESPACE).metadata.resource_version,
        )
        kube.apps.patch_namespaced_deployment_scale("web", NAMESPACE, {"spec": {"replicas": 0}})
        events = gone.wait(15.0)

        for name in names:
            seen = [e["raw_object"] for e in events if e["raw_object"]["metadata"]["name"] == name]
            assert seen[-1]["metadata"]["deletionTimestamp"]
            terminating = [o for o in seen if o["metadata"].get("deletionTimestamp")]
            assert (
                terminating[0]["metadata"]["deletionGracePeriodSeconds"] == 10
            )  # graceful, not removed at once
            assert seen[-1]["status"]["phase"] == "Succeeded"  # SIGTERM: the app exited 0
            assert (tmp_path / f"prestop-{name}").exists() and (tmp_path / f"sigterm-{name}").exists()
        assert pods(kube, "web") == []
        assert kubelet.running() == []
        assert processes and not any(alive(pid) for pid in processes)


def test_a_container_that_ignores_sigterm_is_killed_when_the_grace_period_ends(tmp_path):
    (tmp_path / "ready").write_text("")
    stubborn = app_container(tmp_path, lifecycle={})
    stubborn["env"] = [*stubborn["env"], {"name": "IGNORE_SIGTERM", "value": "1"}]
    with with_node() as (kubelet, kube):
        kube.apps.create_namespaced_deployment(NAMESPACE, deployment("web", 1, stubborn, grace=1))
        wait_until_blocking(
            lambda: any(ready(p) for p in pods(kube, "web")), START_S, state(kubelet, kube, "web")
        )
        pod = running(kube, "web")[0]
        started = time.monotonic()
        kube.core.delete_namespaced_pod(pod["metadata"]["name"], NAMESPACE)
        wait_until_blocking(
            lambda: pod["metadata"]["name"] not in {p["metadata"]["name"] for p in pods(kube, "web")}, 6.0
        )
        assert time.monotonic() - started >= 0.9  # it had its grace period, then SIGKILL
        assert not any(alive(pid) for pid in pids(pod))


def test_kill_pod_leaves_the_pod_not_ready_out_of_its_service_and_replaced(tmp_path):
    (tmp_path / "ready").write_text("")
    service = {
        "metadata": {"name": "web"},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": "http"}]},
    }
    with with_node() as (kubelet, kube):
        kube.core.create_namespaced_service(NAMESPACE, service)
        kube.apps.create_namespaced_deployment(NAMESPACE, deployment("web", 1, app_container(tmp_path)))
        describe = state(kubelet, kube, "web")
        wait_until_blocking(lambda: any(ready(p) for p in pods(kube, "web")), START_S, describe)
        victim = running(kube, "web")[0]
        name, ip = victim["metadata"]["name"], victim["status"]["podIP"]

        def ready_addresses() -> list[str]:
            slices = kube.discovery.list_namespaced_endpoint_slice(
                NAMESPACE, label_selector="kubernetes.io/service-name=web"
            )
            assert all(
                s.metadata.labels["endpointslice.kubernetes.io/managed-by"]
                == "endpointslice-controller.k8s.io"
                for s in slices.items
            )
            return [e.addresses[0] for s in slices.items for e in s.endpoints or [] if e.conditions.ready]

        assert ready_addresses() == [ip]
        assert (
            kube.discovery.list_namespaced_endpoint_slice(NAMESPACE).items[0].ports[0].port == 8080
        )  # "http" resolved

        kubelet.kill_pod(NAMESPACE, name)
        killed = lambda: kube.core.read_namespaced_pod(name, NAMESPACE).status  # noqa: E731
        wait_until_blocking(lambda: killed().phase == "Failed", 5.0, describe)
        assert not ready(
            kube.api_client.sanitize_for_serialization(kube.core.read_namespaced_pod(name, NAMESPACE))
        )
        assert killed().container_statuses[0].state.terminated.exit_code == 137  # SIGKILL
        assert ip not in ready_addresses()
        wait_until_blocking(
            lambda: any(ready(p) and p["metadata"]["name"] != name for p in pods(kube, "web")),
            START_S,
            describe,
        )
        assert len(ready_addresses()) == 1  # the Deployment's replacement


def test_pods_beyond_the_node_cap_wait_unschedulable_until_a_slot_frees(tmp_path):
    (tmp_path / "ready").write_text("")
    with with_node(max_pods=1) as (kubelet, kube):
        kube.apps.create_namespaced_deployment(
            NAMESPACE, deployment("web", 2, app_container(tmp_path, lifecycle={}))
        )
        describe = state(kubelet, kube, "web")
        wait_until_blocking(
            lambda: len(running(kube, "web")) == 1 and len(pods(kube, "web")) == 2, START_S, describe
        )
        waiting = next(p for p in pods(kube, "web") if p["status"].get("phase") == "Pending")
        scheduled = next(c for c in waiting["status"]["conditions"] if c["type"] == "PodScheduled")
        assert (scheduled["status"], scheduled["reason"]) == ("False", "Unschedulable")
        assert "max_pods=1" in scheduled["message"]

        kube.core.delete_namespaced_pod(running(kube, "web")[0]["metadata"]["name"], NAMESPACE)
        wait_until_blocking(
            lambda: waiting["metadata"]["name"] in {p["metadata"]["name"] for p in running(kube, "web")},
            START_S,
            describe,
        )


def test_the_injected_queue_proxy_serves_its_pod_on_the_pod_address_and_stops_within_the_grace(tmp_path):
    """The webhook's pod (kubebackend.sidecar applied to the template, as admission would) runs as on a
    cluster: queue-proxy on 8012/9090/8022 of the pod's own address, in front of the user container."""
    (tmp_path / "ready").write_text("")
    user = app_container(tmp_path, lifecycle={}, args=["0.0.0.0", "8080", str(tmp_path)])
    user["readinessProbe"] = {"tcpSocket": {"port": 8080}, "periodSeconds": 1}
    body = deployment("hello", 1, user, grace=5)
    spec = SidecarSpec(
        namespace=NAMESPACE, revision="hello", container_concurrency=2, timeout_seconds=5, image="kpa:dev"
    )
    pod = copy.deepcopy(body["spec"]["template"])
    pod = json_patch(pod, sidecar_patch(pod, spec))
    queue_proxy = pod["spec"]["containers"][1]
    queue_proxy["command"] = [sys.executable, "-m", "kpa"]  # the image's entrypoint, run here as a process
    body["spec"]["template"] = pod
    with with_node() as (kubelet, kube):
        kube.apps.create_namespaced_deployment(NAMESPACE, body)
        describe = state(kubelet, kube, "hello")
        wait_until_blocking(lambda: any(ready(p) for p in pods(kube, "hello")), START_S, describe)
        ip = running(kube, "hello")[0]["status"]["podIP"]
        assert json.loads(get(ip, 8012))["local"] == [ip, 8080]  # through the queue-proxy to the app
        assert b"average_concurrent_requests" in get(ip, 9090, "/stats")
        processes = pids(running(kube, "hello")[0])
        kube.apps.patch_namespaced_deployment_scale("hello", NAMESPACE, {"spec": {"replicas": 0}})
        wait_until_blocking(lambda: pods(kube, "hello") == [], 10.0, describe)
        assert len(processes) == 2 and not any(alive(pid) for pid in processes)


def test_a_delete_with_no_grace_period_removes_the_pod_at_once_and_its_processes_die(tmp_path):
    (tmp_path / "ready").write_text("")
    with with_node() as (kubelet, kube):
        kube.apps.create_namespaced_deployment(NAMESPACE, deployment("web", 1, app_container(tmp_path)))
        describe = state(kubelet, kube, "web")
        wait_until_blocking(lambda: len(running(kube, "web")) == 1, START_S, describe)
        pod = running(kube, "web")[0]
        kube.core.delete_namespaced_pod(pod["metadata"]["name"], NAMESPACE, grace_period_seconds=0)
        assert pod["metadata"]["name"] not in {p["metadata"]["name"] for p in pods(kube, "web")}
        wait_until_blocking(lambda: not any(alive(pid) for pid in pids(pod)), 5.0, describe)
        assert not (tmp_path / f"prestop-{pod['metadata']['name']}").exists()  # no hook: it was forced
