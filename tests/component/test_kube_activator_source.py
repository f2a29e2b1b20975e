"""The activator's Kubernetes source on the fake cluster (pods run by its kubelet): it learns a
revision's ready pods from watches within a second of their readiness and drops them as they go,
takes the revision's settings from its pods' queue-proxy environment (or, at zero, from its
Service), and finds its own slot among the activator Service's ready endpoints; and `kpa activator
--kubernetes` does all of it as pods of the fake cluster, forwarding a request to a revision's pod.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import sys
import time
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from fakecluster_fixtures import Kube, with_node, write_kubeconfig
from waiting import wait_until, wait_until_blocking

from activator.config import RevisionConfig
from autoscaler.stat import RevisionKey
from fakecluster.kubelet import Kubelet
from fakecluster.patches import json_patch
from kubebackend.activator_source import ActivatorSource
from kubebackend.sidecar import REVISION_LABEL, SidecarSpec, sidecar_patch

pytestmark = pytest.mark.timeout(60)

APP = str(Path(__file__).with_name("fake_pod_app.py"))
NS, SYSTEM = "ml", "kpa-system"
KEY = RevisionKey(NS, "hello")
START_S = 15.0


class RecordingTable:
    """The activator's control API, recording what it was told and when (on the loop's clock)."""

    def __init__(self) -> None:
        self.configs: dict[RevisionKey, RevisionConfig] = {}
        self.endpoints: dict[RevisionKey, list[str]] = {}
        self.removed: list[RevisionKey] = []
        self.activator_slot = (-1, 1)
        self.when: dict[str, float] = {}

    def _note(self, what: str) -> None:
        self.when[what] = time.monotonic()

    def set_revision(self, config: RevisionConfig) -> None:
        self.configs[config.key] = config

    def set_endpoints(self, key: RevisionKey, addresses: list[str]) -> None:
        assert key in self.configs, "set_endpoints before set_revision"
        self.endpoints[key] = list(addresses)
        self._note(f"{key}:{len(addresses)}")

    def remove_revision(self, key: RevisionKey) -> None:
        self.configs.pop(key)
        self.endpoints.pop(key, None)
        self.removed.append(key)

    def set_activator_slot(self, index: int, count: int) -> None:
        self.activator_slot = (index, count)


@contextlib.asynccontextmanager
async def source_for(kube: Kube, table: Any, **options: Any) -> AsyncIterator[ActivatorSource]:
    source = ActivatorSource(table, kube.api_client, **options)
    try:
        await source.start(sync_timeout_s=10)
        yield source
    finally:
        await source.close()


def app(marks: Path, name: str = "app", port: int = 8080, **env: str) -> dict[str, Any]:
    return {
        "name": name,
        "image": "fake-pod-app:1",
        "command": [sys.executable, APP, "0.0.0.0", str(port), str(marks)],
        "env": [{"name": key, "value": value} for key, value in env.items()],
        "ports": [{"name": "http", "containerPort": port}],
        "readinessProbe": {
            "httpGet": {
                "path": "/ready",
                "port": port,
                "httpHeaders": [{"name": "X-Probe", "value": "kubelet"}],
            },
            "periodSeconds": 1,
        },
    }


def deployment(
    name: str, replicas: int, labels: dict[str, str], *containers: dict[str, Any]
) -> dict[str, Any]:
    return {
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name, **labels}},
                "spec": {"terminationGracePeriodSeconds": 5, "containers": list(containers)},
            },
        },
    }


def revision_service(**annotations: str) -> dict[str, Any]:
    """The controller's selector-less public Service of revision hello."""
    return {
        "metadata": {"name": "hello-kpa", "labels": {REVISION_LABEL: "hello"}, "annotations": annotations},
        "spec": {"ports": [{"name": "http", "port": 80, "targetPort": 8012}]},
    }


def ready_ips(kube: Kube, namespace: str, app_name: str) -> list[str]:
    pods = kube.core.list_namespaced_pod(namespace, label_selector=f"app={app_name}").items
    return sorted(
        p.status.pod_ip
        for p in pods
        if not p.metadata.deletion_timestamp
        and any(c.type == "Ready" and c.status == "True" for c in p.status.conditions or [])
    )


def test_a_revisions_ready_pods_are_learned_within_a_second_and_dropped_when_they_go(tmp_path):
    async def body(kube: Kube) -> None:
        table = RecordingTable()
        async with source_for(kube, table):
            settings = {
                "kpa-emulator.dev/container-concurrency": "5",
                "kpa-emulator.dev/timeout-seconds": "9",
            }
            kube.core.create_namespaced_service(NS, revision_service(**settings))
            await wait_until(lambda: KEY in table.configs, 2.0, "the revision at zero, from its Service")
            assert (table.configs[KEY].container_concurrency, table.configs[KEY].timeout_seconds) == (5, 9.0)
            assert table.endpoints[KEY] == []

            queue_proxy = app(
                tmp_path, "queue-proxy", 8012, CONTAINER_CONCURRENCY="3", REVISION_TIMEOUT_SECONDS="7"
            )
            hello = deployment("hello", 2, {REVISION_LABEL: "hello"}, queue_proxy)
            await asyncio.to_thread(kube.apps.create_namespaced_deployment, NS, hello)
            await wait_until(
                lambda: table.configs[KEY].container_concurrency == 3, START_S, "settings from a pod"
            )
            assert table.configs[KEY].timeout_seconds == 7.0 and table.endpoints[KEY] == []  # not Ready yet

            (tmp_path / "ready").write_text("")  # the probes pass from now on
            await wait_until(lambda: len(ready_ips(kube, NS, "hello")) == 2, START_S, "both pods Ready")
            seen_ready = time.monotonic()
            await wait_until(lambda: f"{KEY}:2" in table.when, 2.0, lambda: f"endpoints {table.endpoints}")
            assert table.when[f"{KEY}:2"] - seen_ready < 1.0
            assert table.endpoints[KEY] == [f"{ip}:8012" for ip in ready_ips(kube, NS, "hello")]

            scaled = time.monotonic()
            await asyncio.to_thread(
                kube.apps.patch_namespaced_deployment_scale, "hello", NS, {"spec": {"replicas": 0}}
            )
            await wait_until(lambda: table.endpoints[KEY] == [], 2.0, lambda: f"endpoints {table.endpoints}")
            assert time.monotonic() - scaled < 1.0  # terminating pods leave at once, before they stop
            await wait_until(lambda: not kube.core.list_namespaced_pod(NS).items, 10.0, "the pods removed")
            await wait_until(
                lambda: table.configs[KEY].container_concurrency == 5, 2.0, "back to the Service's"
            )

            await asyncio.to_thread(kube.core.delete_namespaced_service, "hello-kpa", NS)
            await wait_until(lambda: table.removed == [KEY], 2.0, "the revision removed")

    with with_node() as (_, kube):
        asyncio.run(body(kube))


def activator_deployment(replicas: int, container: dict[str, Any]) -> dict[str, Any]:
    body = deployment("kpa-activator", replicas, {}, container)
    body["spec"]["template"]["metadata"]["labels"] = {"app": "kpa-activator"}
    return body


ACTIVATOR_SERVICE = {
    "metadata": {"name": "kpa-activator"},
    "spec": {
        "selector": {"app": "kpa-activator"},
        "ports": [{"name": "http", "port": 8012, "targetPort": "http"}],
    },
}


def test_the_slot_is_the_own_ip_among_the_activator_services_sorted_ready_addresses(tmp_path):
    (tmp_path / "ready").write_text("")

    async def body(kubelet: Kubelet, kube: Kube) -> None:
        kube.core.create_namespaced_service(SYSTEM, ACTIVATOR_SERVICE)
        kube.apps.create_namespaced_deployment(SYSTEM, activator_deployment(3, app(tmp_path, port=8012)))
        await wait_until(lambda: len(ready_ips(kube, SYSTEM, "kpa-activator")) == 3, START_S, "3 activators")
        ips = ready_ips(kube, SYSTEM, "kpa-activator")
        assert ips == sorted(ips, key=str)
        pods = {p.status.pod_ip: p.metadata.name for p in kube.core.list_namespaced_pod(SYSTEM).items}
        by_ip, by_name, outsider = RecordingTable(), RecordingTable(), RecordingTable()
        async with (
            source_for(kube, by_ip, pod_ip=ips[1]),
            source_for(kube, by_name, pod_name=pods[ips[2]]),
            source_for(kube, outsider, pod_ip="127.0.0.99"),
        ):
            assert (by_ip.activator_slot, by_name.activator_slot, outsider.activator_slot) == (
                (1, 3),
                (2, 3),
                (-1, 3),
            )

            kubelet.kill_pod(SYSTEM, pods[ips[0]])  # the first address dies: everyone moves up one
            await wait_until(
                lambda: by_ip.activator_slot == (0, 2), 5.0, lambda: f"slot {by_ip.activator_slot}"
            )
            assert by_name.activator_slot == (1, 2) and outsider.activator_slot == (-1, 2)

    with with_node() as (kubelet, kube):
        asyncio.run(body(kubelet, kube))


def get(url: str, **headers: str) -> tuple[int, bytes]:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    request = urllib.request.Request(url, headers=headers)
    try:
        with opener.open(request, timeout=5) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()
    except OSError:
        return 0, b""


def admin(ip: str, path: str) -> Any:
    status, body = get(f"http://{ip}:8085{path}")
    return json.loads(body) if status == 200 else None


def test_kpa_activator_kubernetes_runs_as_pods_finds_its_slot_and_forwards_to_a_revisions_pod(tmp_path):
    """Two `kpa activator --kubernetes` pods and a revision whose pod has the webhook's queue-proxy."""
    (tmp_path / "ready").write_text("")
    with with_node() as (kubelet, kube):
        config = write_kubeconfig(tmp_path / "kubeconfig", kube.server.url)
        activator = {
            "name": "activator",
            "image": "kpa-emulator/kpa",
            "command": [
                sys.executable,
                "-m",
                "kpa",
                "activator",
                "--kubernetes",
                "--kubeconfig",
                str(config),
            ],
            "args": ["--host=0.0.0.0", "--port=8012", "--admin-host=0.0.0.0", "--admin-port=8085"],
            "env": [{"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
            "ports": [{"name": "http", "containerPort": 8012}],
            "readinessProbe": {
                "httpGet": {
                    "path": "/",
                    "port": "http",
                    "httpHeaders": [{"name": "K-Kubelet-Probe", "value": "activator"}],
                },
                "periodSeconds": 1,
            },
        }
        kube.core.create_namespaced_service(SYSTEM, ACTIVATOR_SERVICE)
        kube.apps.create_namespaced_deployment(SYSTEM, activator_deployment(2, activator))

        hello = deployment("hello", 1, {}, {**app(tmp_path), "readinessProbe": {"tcpSocket": {"port": 8080}}})
        pod = copy.deepcopy(hello["spec"]["template"])
        spec = SidecarSpec(
            namespace=NS, revision="hello", container_concurrency=2, timeout_seconds=5, image="kpa"
        )
        pod = json_patch(pod, sidecar_patch(pod, spec))  # what the webhook makes of each pod
        pod["spec"]["containers"][1]["command"] = [sys.executable, "-m", "kpa"]
        hello["spec"]["template"] = pod
        kube.core.create_namespaced_service(NS, revision_service())
        kube.apps.create_namespaced_deployment(NS, hello)

        def describe() -> str:
            names = [p.metadata.name for p in kube.core.list_namespaced_pod(SYSTEM).items]
            return "".join(kubelet.logs(SYSTEM, name)[-2000:] for name in names)

        wait_until_blocking(lambda: len(ready_ips(kube, SYSTEM, "kpa-activator")) == 2, START_S, describe)
        wait_until_blocking(lambda: len(ready_ips(kube, NS, "hello")) == 1, START_S, describe)
        activators, [pod_ip] = ready_ips(kube, SYSTEM, "kpa-activator"), ready_ips(kube, NS, "hello")
        wait_until_blocking(
            lambda: (
                [admin(ip, "/activators") for ip in activators]
                == [{"index": 0, "count": 2}, {"index": 1, "count": 2}]
            ),
            10.0,
            lambda: f"slots {[admin(ip, '/activators') for ip in activators]}\n{describe()}",
        )
        for ip in activators:
            wait_until_blocking(
                lambda ip=ip: (
                    (admin(ip, f"/revisions/{NS}/hello") or {}).get("healthy") == [f"{pod_ip}:8012"]
                ),
                10.0,
                lambda ip=ip: f"revision {admin(ip, f'/revisions/{NS}/hello')}\n{describe()}",
            )
            status = admin(ip, f"/revisions/{NS}/hello")
            assert (status["container_concurrency"], status["timeout_seconds"]) == (2, 5.0)
            code, answer = get(f"http://{ip}:8012/", Host=f"hello.{NS}")
            assert code == 200 and json.loads(answer)["local"] == [pod_ip, 8080], answer

        kube.apps.patch_namespaced_deployment_scale("hello", NS, {"spec": {"replicas": 0}})
        wait_until_blocking(
            lambda: all(admin(ip, f"/revisions/{NS}/hello")["endpoints"] == [] for ip in activators),
            5.0,
            describe,
        )
