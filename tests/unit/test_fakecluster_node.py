"""The fake node's pure parts: what a container is run with, the pod status kubelet writes, what the
Deployment controller does next, the EndpointSlice a Service gets, and graceful pod deletion."""

from __future__ import annotations

from typing import Any

import pytest
from tables import named

from fakecluster.deployments import HASH_LABEL, plan, pod_for, template_hash
from fakecluster.endpointslices import wanted_slices
from fakecluster.pod_spec import PodSpecError, expand, launches, pod_local
from fakecluster.pod_status import ContainerView, PodView, phase_of, pod_status
from fakecluster.resources import CONFIGMAPS, PODS
from fakecluster.store import Store, deletion_grace

IP = "127.0.3.7"


@pytest.mark.parametrize(
    "written, run",
    named(
        [
            ("0.0.0.0", IP),
            ("--host=0.0.0.0", f"--host={IP}"),
            ("http://127.0.0.1:8080/x", f"http://{IP}:8080/x"),
            ("http://localhost/", f"http://{IP}/"),
            ('{"host":"127.0.0.1","port":8080}', f'{{"host":"{IP}","port":8080}}'),
            ("127.0.0.10", "127.0.0.10"),
            ("localhost.example.com", "localhost.example.com"),
            ("mylocalhost", "mylocalhost"),
            ("10.0.0.0.1", "10.0.0.0.1"),
        ]
    ),
)
def test_pod_local_makes_every_whole_loopback_or_wildcard_host_the_pod_ip(written, run):
    assert pod_local(written, IP) == run


@pytest.mark.parametrize(
    "text, expanded",
    named([("$(A)-$(B)", "1-2"), ("$$(A)", "$(A)"), ("$(MISSING)", "$(MISSING)"), ("$A", "$A")]),
)
def test_dollar_references_expand_as_kubelet_expands_them(text, expanded):
    assert expand(text, {"A": "1", "B": "2"}) == expanded


def pod(*containers: dict[str, Any], **spec: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": "p", "namespace": "ns", "uid": "u", "labels": {"app": "a"}},
        "spec": {"nodeName": "fake-node", "containers": list(containers), **spec},
        "status": {"podIP": IP, "hostIP": "127.0.0.1"},
    }


def test_a_container_gets_its_downward_api_values_unrewritten_and_literals_made_pod_local():
    container = {
        "name": "c",
        "command": ["serve", "--bind=0.0.0.0", "--api=http://$(NODE):6443"],
        "env": [
            {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "status.hostIP"}}},
            {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
            {"name": "URL", "value": "http://localhost:$(PORT)"},
            {"name": "PORT", "valueFrom": {"configMapKeyRef": {"name": "cm", "key": "port"}}},
            {"name": "LATE", "value": "$(PORT)"},
        ],
    }
    [launch] = launches(pod(container), IP, {"PATH": "/bin"}, lambda ns, name: {"port": "81"})
    assert launch.argv == ("serve", f"--bind={IP}", "--api=http://127.0.0.1:6443")
    env = launch.env
    assert (env["KPA_POD_IP"], env["HOSTNAME"], env["APP"], env["PATH"]) == (IP, "p", "a", "/bin")
    assert env["URL"] == f"http://{IP}:$(PORT)"  # PORT is defined after URL: left as written
    assert env["LATE"] == "81"


def one(**container: Any) -> dict[str, Any]:
    return {"containers": [{"name": "c", "command": ["x"], **container}]}


def env_from(source: dict[str, Any]) -> dict[str, Any]:
    return one(env=[{"name": "E", "valueFrom": source}])


REFUSED = [
    ("no command", {"containers": [{"name": "c", "image": "nginx"}]}, "no command"),
    ("init containers", {**one(), "initContainers": [{}]}, "init"),
    ("unknown fieldRef", env_from({"fieldRef": {"fieldPath": "spec.hostname"}}), "spec.hostname"),
    ("secret", env_from({"secretKeyRef": {"name": "s", "key": "k"}}), "secretKeyRef"),
    ("unknown port name", one(readinessProbe={"tcpSocket": {"port": "web"}}), "'web'"),
]


@pytest.mark.parametrize("label, spec, words", named(REFUSED))
def test_a_pod_the_kubelet_cannot_run_is_refused_naming_the_field(label, spec, words):
    with pytest.raises(PodSpecError, match=words) as refused:
        launches({**pod(), "spec": spec}, IP, {})
    assert "pod ns/p" in str(refused.value)


def test_a_container_without_command_runs_its_images_entrypoint_when_the_kubelet_knows_it():
    container = {"name": "c", "image": "kpa:1", "args": ["queue-proxy", "--host", "0.0.0.0"]}
    [launch] = launches(pod(container), IP, {}, entrypoints={"kpa:1": ["python", "-m", "kpa"]})
    assert launch.argv == ("python", "-m", "kpa", "queue-proxy", "--host", IP)
    own = {**container, "command": ["own"]}  # a command of its own wins, as on a cluster
    assert launches(pod(own), IP, {}, entrypoints={"kpa:1": ["python"]})[0].argv[0] == "own"
    with pytest.raises(PodSpecError, match="no command"):
        launches(pod({**container, "image": "other:1"}), IP, {}, entrypoints={"kpa:1": ["python"]})


def test_probes_and_hooks_resolve_named_ports_and_default_to_the_pod_ip_and_kubelet_timing():
    container = {
        "name": "c",
        "command": ["x"],
        "ports": [{"name": "http", "containerPort": 8012}],
        "readinessProbe": {
            "httpGet": {"port": "http", "httpHeaders": [{"name": "K-Network-Probe", "value": "queue"}]},
            "periodSeconds": 1,
        },
        "lifecycle": {"preStop": {"httpGet": {"port": 8022, "path": "/wait-for-drain"}}},
    }
    [launch] = launches(pod(container), IP, {})
    probe, hook = launch.readiness, launch.pre_stop
    assert probe is not None and hook is not None
    assert (probe.kind, probe.host, probe.port, probe.path, probe.headers) == (
        "http",
        IP,
        8012,
        "/",
        (("K-Network-Probe", "queue"),),
    )
    assert (probe.period_s, probe.timeout_s, probe.success_threshold, probe.failure_threshold) == (1, 1, 1, 3)
    assert (hook.kind, hook.port, hook.path) == ("http", 8022, "/wait-for-drain")


def view(*containers: ContainerView) -> PodView:
    return PodView(IP, "t0", containers)


RUNNING = ContainerView("c", "i", started_at="t0")


@pytest.mark.parametrize(
    "label, containers, phase, ready",
    named(
        [
            ("starting", [ContainerView("c", "i")], "Pending", False),
            ("running, probe not passed", [RUNNING], "Running", False),
            ("running and ready", [ContainerView("c", "i", ready=True, started_at="t0")], "Running", True),
            (
                "one of two exited",
                [RUNNING, ContainerView("d", "i", started_at="t0", exit_code=137)],
                "Running",
                False,
            ),
            ("all exited 0", [ContainerView("c", "i", started_at="t0", exit_code=0)], "Succeeded", False),
            (
                "killed",
                [ContainerView("c", "i", ready=True, started_at="t0", exit_code=137)],
                "Failed",
                False,
            ),
        ]
    ),
)
def test_pod_phase_and_readiness_follow_the_containers(label, containers, phase, ready):
    status = pod_status(view(*containers), None, "t1")
    assert phase_of(view(*containers)) == status["phase"] == phase
    ready_condition = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert ready_condition["status"] == str(ready)


def test_a_condition_keeps_its_transition_time_until_its_status_changes():
    first = pod_status(view(RUNNING), None, "t1")
    same = pod_status(view(RUNNING), first, "t2")
    flipped = pod_status(view(ContainerView("c", "i", ready=True, started_at="t0")), same, "t3")

    def ready_since(status: dict[str, Any]) -> str:
        return next(c["lastTransitionTime"] for c in status["conditions"] if c["type"] == "Ready")

    assert (ready_since(first), ready_since(same), ready_since(flipped)) == ("t1", "t1", "t3")


TEMPLATE = {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "command": ["x"]}]}}


def deployment(replicas: int, template: dict[str, Any] = TEMPLATE) -> dict[str, Any]:
    return {
        "metadata": {"name": "web", "namespace": "ns", "uid": "d1", "generation": 1},
        "spec": {"replicas": replicas, "template": template},
    }


def owned_pod(
    name: str, *, ready: bool = True, scheduled: bool = True, created: str = "t1", **extra: Any
) -> dict:
    body = pod_for(deployment(1, extra.pop("template", TEMPLATE)), extra.pop("hash", template_hash(TEMPLATE)))
    body["metadata"].update(name=name, creationTimestamp=created, **extra)
    body["spec"]["nodeName"] = "fake-node" if scheduled else None
    conditions = [{"type": "Ready", "status": "True" if ready else "False"}]
    body["status"] = {"phase": "Running" if scheduled else "Pending", "conditions": conditions}
    return body


def test_a_new_pod_is_the_template_owned_by_the_deployment_with_its_hash_label():
    body = pod_for(deployment(1), "abc")
    assert body["metadata"]["generateName"] == "web-abc-"
    assert body["metadata"]["labels"] == {"app": "web", HASH_LABEL: "abc"}
    assert body["metadata"]["ownerReferences"][0]["uid"] == "d1"
    assert body["spec"] == TEMPLATE["spec"]


@pytest.mark.parametrize(
    "label, replicas, pods, create, delete",
    named(
        [
            ("scale up from none", 2, [], 2, ()),
            ("at size", 1, [owned_pod("a")], 0, ()),
            ("terminating pods do not count", 1, [owned_pod("a", deletionTimestamp="t")], 1, ()),
            (
                "scale down: unscheduled, then not ready, then newest",
                1,
                [
                    owned_pod("old"),
                    owned_pod("new", created="t9"),
                    owned_pod("cold", ready=False),
                    owned_pod("pending", scheduled=False),
                ],
                0,
                ("pending", "cold", "new"),
            ),
            (
                "a failed pod is replaced, not deleted",
                1,
                [owned_pod("dead") | {"status": {"phase": "Failed"}}],
                1,
                (),
            ),
            ("old template kept until the new is ready", 1, [owned_pod("old", hash="zzz")], 1, ()),
        ]
    ),
)
def test_the_deployment_controller_plans_creates_and_deletes(label, replicas, pods, create, delete):
    todo = plan(deployment(replicas), pods)
    assert (todo.create, todo.delete) == (create, delete)


def test_old_template_pods_go_once_the_new_ones_are_ready():
    todo = plan(deployment(1), [owned_pod("old", hash="zzz"), owned_pod("new")])
    assert (todo.create, todo.delete) == (0, ("old",))


def service(**spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": "svc", "namespace": "ns", "uid": "s1"}, "spec": spec}


def selected(name: str, ip: str, *, ready: bool = True, terminating: bool = False) -> dict[str, Any]:
    meta = {"name": name, "namespace": "ns", "uid": name, "labels": {"app": "a"}}
    if terminating:
        meta["deletionTimestamp"] = "t"
    conditions = [{"type": "Ready", "status": str(ready)}]
    spec = {"nodeName": "fake-node", "containers": [{"ports": [{"name": "http", "containerPort": 8012}]}]}
    return {
        "metadata": meta,
        "spec": spec,
        "status": {"phase": "Running", "podIP": ip, "conditions": conditions},
    }


def test_a_service_slice_lists_selected_pods_with_all_three_conditions_and_resolved_ports():
    pods = [
        selected("b", "127.0.1.2", ready=False),
        selected("a", "127.0.1.1"),
        selected("c", "127.0.1.3", terminating=True),
        {**selected("other", "127.0.1.4"), "metadata": {"name": "other", "labels": {"app": "z"}}},
    ]
    [body] = wanted_slices(
        service(selector={"app": "a"}, ports=[{"name": "http", "port": 80, "targetPort": "http"}]), pods
    ).values()
    assert body["metadata"]["labels"] == {
        "kubernetes.io/service-name": "svc",
        "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io",
    }
    assert body["ports"] == [{"name": "http", "port": 8012, "protocol": "TCP"}]
    assert [(e["addresses"][0], e["conditions"]) for e in body["endpoints"]] == [
        ("127.0.1.1", {"ready": True, "serving": True, "terminating": False}),
        ("127.0.1.2", {"ready": False, "serving": False, "terminating": False}),
        ("127.0.1.3", {"ready": False, "serving": True, "terminating": True}),
    ]


def test_a_selectorless_service_gets_no_slice_and_a_service_without_pods_an_empty_one():
    assert wanted_slices(service(ports=[{"port": 80}]), [selected("a", "127.0.1.1")]) == {}
    [empty] = wanted_slices(service(selector={"app": "a"}, ports=[{"port": 80}]), []).values()
    assert (empty["endpoints"], empty["ports"]) == ([], [])


@pytest.mark.parametrize(
    "label, resource, obj, requested, grace",
    named(
        [
            (
                "a bound pod: its terminationGracePeriodSeconds",
                PODS,
                {"spec": {"nodeName": "n", "terminationGracePeriodSeconds": 7}},
                None,
                7,
            ),
            ("a bound pod: 30 by default", PODS, {"spec": {"nodeName": "n"}}, None, 30),
            ("DeleteOptions override it", PODS, {"spec": {"nodeName": "n"}}, 0, 0),
            ("an unbound pod goes at once", PODS, {"spec": {}}, None, 0),
            (
                "a finished pod goes at once",
                PODS,
                {"spec": {"nodeName": "n"}, "status": {"phase": "Failed"}},
                None,
                0,
            ),
            ("other objects go at once", CONFIGMAPS, {}, 10, 0),
        ]
    ),
)
def test_deletion_grace_is_kube_apiservers_pod_rule(label, resource, obj, requested, grace):
    assert deletion_grace(resource, obj, requested) == grace


def test_a_graceful_pod_delete_marks_it_until_the_kubelets_own_delete_removes_it():
    store = Store()
    store.create(PODS, "ns", {"metadata": {"name": "p"}, "spec": {"nodeName": "n"}}, "t0", "u")
    marked, change = store.delete(PODS, "ns", "p", "t1", grace_seconds=30, grace_ends="t31")
    assert change is not None and change.type == "MODIFIED"
    assert (marked["metadata"]["deletionTimestamp"], marked["metadata"]["deletionGracePeriodSeconds"]) == (
        "t31",
        30,
    )
    status_write = {**marked, "status": {"phase": "Succeeded"}}
    _, change = store.update(PODS, "ns", "p", status_write, "status")
    assert change is not None and change.type == "MODIFIED"  # still there: a grace period is left
    _, change = store.delete(PODS, "ns", "p", "t2", grace_seconds=60, grace_ends="t62")
    assert change is None  # a longer grace never replaces a shorter one
    _, change = store.delete(PODS, "ns", "p", "t3")
    assert change is not None and change.type == "DELETED" and not store.exists(PODS, "ns", "p")
