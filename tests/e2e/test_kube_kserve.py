"""A KServe InferenceService scaled to zero and back on the fake cluster, end to end with real processes
(issue 12, "Done when" (2)).

What runs, and what stands in for what:

* the fake API server with its node (``with_node``): every pod is a set of local processes on its
  own 127.x address; the kubelet is told the two images' entrypoints (``python -m kpa`` and
  ``python -m kpa predictor``), as a container runtime reads them from the image;
* the controller, in-process on this test's loop (as the ``test_kube_controller*`` tests run it),
  leading at once, with its status API on 127.0.0.1 (the node, where pods reach it as
  ``status.hostIP``);
* the sidecar webhook: ``run_webhook`` with the controller's own ``sidecar_lookup`` on this loop, as
  ``kpa controller`` runs it beside the in-process ``Controller`` (which leaves the webhook and the
  elector to the command), registered with the manifest's MutatingWebhookConfiguration (rules,
  namespaceSelector) but by URL and with ``failurePolicy: Fail`` (a pod without its queue-proxy
  fails loudly here). The API server calls it over HTTPS for every pod the Deployment controller
  creates;
* two ``kpa activator --kubernetes`` pods from ``manifests/base/activator.yaml`` (its Deployment and
  Service; the autoscaler URL points at the in-process controller through ``$(HOST_IP)`` since there
  is no Service routing, ``--kubeconfig`` stands in for the ServiceAccount, probes every second);
* ``config-autoscaler`` from ``manifests/base``, with a 6 s stable window and a 2 s scale-to-zero
  grace period so idle means zero within seconds, and zero initial scale allowed;
* an InferenceService like ``manifests/examples/inferenceservice/cnn.yaml`` (Standard,
  ``autoscalerClass: external``, ``minReplicas: 0``, ``containerConcurrency: 4``). **KServe is not
  running**: the test creates the predictor Deployment as KServe's raw-deployment reconciler would
  (``<isvc>-predictor``, labels ``serving.kserve.io/inferenceservice``, ``component: predictor``,
  ``app: isvc.<isvc>-predictor``, the predictor's containers as ``kserve-container``, owned by the
  InferenceService), at 0 replicas. KServe's own ``<isvc>-predictor`` Service is left out: nothing
  here routes Services;
* ``kserve-container`` runs ``kpa predictor`` on a one-model repository: a TorchScript ``y = 3 x``
  with dynamic batching that holds each request up to 100 ms, so a few clients are a concurrency of a
  few without burning the two shared cores.

Requests are V2 inferences sent with ``tritonclient.http`` to the activators' pod IPs on 8012 with
``Host: <predictor>-kpa.<namespace>``, the revision's public name.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import sys
import threading
import time
import urllib.request
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.http as triton
import yaml
from component.fakecluster_fixtures import Kube, with_node, write_kubeconfig
from component.predictor_fixtures import write_scale_model
from waiting import wait_until

from fakecluster.kubelet import Kubelet
from fakecluster.resources import DEPLOYMENTS, ENDPOINTSLICES, PODS
from kubebackend.controller import Controller, ControllerOptions
from kubebackend.endpoints import MODE_ANNOTATION
from kubebackend.rbac import WEBHOOK_CONFIGURATION
from kubebackend.sidecar import QUEUE_PROXY, REVISION_LABEL
from kubebackend.webhook import WebhookServer
from kubebackend.webhook_certs import run_webhook

pytestmark = pytest.mark.timeout(300)

ROOT = Path(__file__).resolve().parents[2]
BASE = ROOT / "manifests" / "base"
NS, SYSTEM = "models", "kpa-system"
ISVC = "tiny"
PREDICTOR = f"{ISVC}-predictor"  # KServe's name for the predictor Deployment
HOST = f"{PREDICTOR}-kpa.{NS}"  # the revision's public Service, which the activators route by
MODEL, FACTOR = "scale", 3.0
KPA_IMAGE, PREDICTOR_IMAGE = "kpa-emulator/kpa:0.1.0", "kpa-emulator/predictor:0.1.0"
ENTRYPOINTS = {  # what images/Dockerfile.kpa and Dockerfile.predictor put in ENTRYPOINT
    KPA_IMAGE: [sys.executable, "-m", "kpa"],
    "kpa-emulator/kpa": [sys.executable, "-m", "kpa"],  # manifests/base before kustomize tags it
    PREDICTOR_IMAGE: [sys.executable, "-m", "kpa", "predictor"],
}
MAX_REPLICAS = 3
CLIENTS = 8  # closed-loop clients during the load, four per activator
LOAD_S = 20.0
START_S = 60.0  # a pod's start on a loaded 2-core machine: torch's import alone takes seconds


def manifest(path: Path, kind: str) -> dict[str, Any]:
    [found] = [doc for doc in yaml.safe_load_all(path.read_text()) if doc and doc["kind"] == kind]
    return found


def inference_service(repository: Path, cache: Path) -> dict[str, Any]:
    """As manifests/examples/inferenceservice/cnn.yaml, with this test's repository, no init container
    (the fake kubelet runs none: the test writes the repository first) and a short stable window."""
    return {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {
            "name": ISVC,
            "annotations": {
                "serving.kserve.io/deploymentMode": "Standard",
                "serving.kserve.io/autoscalerClass": "external",
                "autoscaling.knative.dev/initial-scale": "0",  # created idle: the first request wakes it
                "autoscaling.knative.dev/window": "6s",
                "autoscaling.knative.dev/target-burst-capacity": "0",  # serve mode once a pod is ready
            },
        },
        "spec": {
            "predictor": {
                "minReplicas": 0,
                "maxReplicas": MAX_REPLICAS,
                "scaleMetric": "concurrency",
                "scaleTarget": 2,
                "containerConcurrency": 4,
                "timeout": 60,
                "containers": [
                    {
                        "name": "kserve-container",
                        "image": PREDICTOR_IMAGE,
                        "args": [
                            "--model-repository", str(repository), "--host", "0.0.0.0", "--port", "8080",
                        ],
                        "env": [{"name": "KPA_PREDICTOR_CACHE", "value": str(cache)}],
                        "ports": [{"containerPort": 8080, "protocol": "TCP"}],
                        "readinessProbe": {
                            "httpGet": {"path": "/v2/health/ready", "port": 8080}, "periodSeconds": 1,
                        },
                    }
                ],
            }
        },
    }  # fmt: skip


def kserve_predictor(isvc: dict[str, Any]) -> dict[str, Any]:
    """The predictor Deployment KServe's raw-deployment reconciler makes of ``isvc`` (names and labels
    as in peers-and-protocols.md §2); 0 replicas: with ``autoscalerClass: external`` they are ours."""
    name = isvc["metadata"]["name"]
    app = {"app": f"isvc.{name}-predictor"}
    labels = {**app, "serving.kserve.io/inferenceservice": name, "component": "predictor"}
    owner = {
        "apiVersion": isvc["apiVersion"], "kind": isvc["kind"], "name": name,
        "uid": isvc["metadata"]["uid"], "controller": True, "blockOwnerDeletion": True,
    }  # fmt: skip
    return {
        "metadata": {"name": f"{name}-predictor", "labels": labels, "ownerReferences": [owner]},
        "spec": {
            "replicas": 0,
            "selector": {"matchLabels": app},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": copy.deepcopy(isvc["spec"]["predictor"]["containers"])},
            },
        },
    }


def activators(controller_port: int, kubeconfig: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """manifests/base/activator.yaml's Deployment and Service, pointed at the in-process controller."""
    deployment = manifest(BASE / "activator.yaml", "Deployment")
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    container["args"] = [a for a in container["args"] if not a.startswith("--autoscaler-url")] + [
        f"--autoscaler-url=http://$(HOST_IP):{controller_port}/stats",  # no Service routing here
        f"--kubeconfig={kubeconfig}",  # no ServiceAccount token here
    ]
    container["env"].append({"name": "HOST_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.hostIP"}}})
    container["readinessProbe"]["periodSeconds"] = 1
    return deployment, manifest(BASE / "activator.yaml", "Service")


def config_autoscaler() -> dict[str, Any]:
    body = manifest(BASE / "config-autoscaler.yaml", "ConfigMap")
    body["data"].update(
        {
            "allow-zero-initial-scale": "true",
            "scale-to-zero-grace-period": "2s",
        }
    )
    return body


def webhook_configuration(port: int) -> dict[str, Any]:
    """manifests/base/webhook.yaml's configuration, by URL at the in-process webhook, failing loudly."""
    body = manifest(BASE / "webhook.yaml", "MutatingWebhookConfiguration")
    [hook] = body["webhooks"]
    hook["clientConfig"] = {"url": f"https://127.0.0.1:{port}/mutate-pods"}
    hook["failurePolicy"] = "Fail"
    return body


@contextlib.asynccontextmanager
async def leading_controller(kube: Kube) -> AsyncIterator[Controller]:
    controller = Controller(kube.server.configuration(), ControllerOptions(host="127.0.0.1", port=0))
    try:
        await controller.start(lead=True, sync_timeout=15)
        yield controller
    finally:
        await controller.stop()


@contextlib.asynccontextmanager
async def sidecar_webhook(kube: Kube, controller: Controller, cert_dir: Path) -> AsyncIterator[None]:
    """The injector serving the controller's lookup, its caBundle patched into the configuration."""
    admission = kube.admission
    await asyncio.to_thread(admission.create_mutating_webhook_configuration, webhook_configuration(1))
    stop = asyncio.Event()
    serving: list[WebhookServer] = []
    task = asyncio.create_task(
        run_webhook(
            kube.api_client, controller.sidecar_lookup(KPA_IMAGE), 0, SYSTEM, stop,
            host="127.0.0.1", extra_sans=("127.0.0.1",), cert_dir=cert_dir, backoff_base_s=0.05,
            on_serving=serving.append,
        )
    )  # fmt: skip
    try:
        await wait_until(lambda: bool(serving) or task.done(), 15, "the webhook serving")
        if task.done():
            task.result()
        [hook] = webhook_configuration(serving[0].port)["webhooks"]
        at_port = {"webhooks": [{"name": hook["name"], "clientConfig": hook["clientConfig"]}]}
        await asyncio.to_thread(
            admission.patch_mutating_webhook_configuration, WEBHOOK_CONFIGURATION, at_port
        )

        def bundled() -> bool:
            found = admission.read_mutating_webhook_configuration(WEBHOOK_CONFIGURATION)
            return all(hook.client_config.ca_bundle for hook in found.webhooks)

        await wait_until(lambda: asyncio.to_thread(bundled), 15, "the caBundle patched in")
        yield
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)


class Cluster:
    """What the test reads of the cluster, straight from the fake's store (no API request)."""

    def __init__(self, kube: Kube, kubelet: Kubelet) -> None:
        self.kube, self.kubelet = kube, kubelet
        self.store = kube.server.cluster

    def replicas(self) -> int:
        return int(self.store.get(DEPLOYMENTS, NS, PREDICTOR)["spec"]["replicas"])

    def pods(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        return self.store.list_collection(PODS, namespace, selector, "")["items"]

    def ready_ips(self, namespace: str, selector: str) -> list[str]:
        return sorted(
            pod["status"]["podIP"]
            for pod in self.pods(namespace, selector)
            if not pod["metadata"].get("deletionTimestamp")
            and any(
                c["type"] == "Ready" and c["status"] == "True" for c in pod["status"].get("conditions") or []
            )
        )

    def predictor_ips(self) -> list[str]:
        return self.ready_ips(NS, f"app=isvc.{PREDICTOR}")

    def slice_view(self) -> tuple[str | None, list[str]]:
        found = self.store.read(ENDPOINTSLICES, NS, f"{PREDICTOR}-kpa")
        if found is None:
            return None, []
        mode = (found["metadata"].get("annotations") or {}).get(MODE_ANNOTATION)
        return mode, sorted(a for e in found["endpoints"] for a in e["addresses"])

    def describe(self) -> str:
        lines = [f"replicas {self.replicas()}, slice {self.slice_view()}"]
        for namespace in (NS, SYSTEM):
            for pod in self.pods(namespace, ""):
                name = pod["metadata"]["name"]
                lines.append(f"--- {namespace}/{name} {pod['status'].get('phase')}")
                lines.append(self.kubelet.logs(namespace, name)[-1500:])
        return "\n".join(lines)


def activator_revision(ip: str) -> dict[str, Any] | None:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(f"http://{ip}:8085/revisions/{NS}/{PREDICTOR}", timeout=2) as answer:
            return json.loads(answer.read())
    except OSError:
        return None


class Inference:
    """One tritonclient per thread, to one activator, addressed by the revision's Host."""

    def __init__(self, activator_ip: str) -> None:
        self.client = triton.InferenceServerClient(
            url=f"{activator_ip}:8012", connection_timeout=90, network_timeout=90
        )

    def __call__(self, values: list[float]) -> list[float]:
        given = triton.InferInput("x", [1, 4], "FP32")
        given.set_data_from_numpy(np.array([values], dtype=np.float32))
        answer = self.client.infer(MODEL, [given], headers={"Host": HOST})
        return answer.as_numpy("y").reshape(-1).tolist()

    def close(self) -> None:
        self.client.close()


class Load:
    """Closed-loop clients, each on its own thread, spread over the activators: every answer checked."""

    def __init__(self, activator_ips: list[str]) -> None:
        self.ips = activator_ips
        self.answered = 0
        self.lost: list[str] = []
        self.by_activator: dict[str, int] = dict.fromkeys(activator_ips, 0)
        self._lock = threading.Lock()

    def run(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        with ThreadPoolExecutor(CLIENTS) as pool:
            for future in [pool.submit(self._client, i, deadline) for i in range(CLIENTS)]:
                future.result()

    def _client(self, index: int, deadline: float) -> None:
        ip = self.ips[index % len(self.ips)]
        infer = Inference(ip)
        try:
            n = 0
            while time.monotonic() < deadline:
                n += 1
                values = [float(index), float(n), 1.0, -2.0]
                try:
                    got = infer(values)
                except Exception as error:  # a lost request: counted, and the client goes on
                    with self._lock:
                        self.lost.append(f"client {index} via {ip}: {error!r}")
                    continue
                with self._lock:
                    if got == [v * FACTOR for v in values]:
                        self.answered += 1
                        self.by_activator[ip] += 1
                    else:
                        self.lost.append(f"client {index} via {ip}: {values} -> {got}")
        finally:
            infer.close()


async def watch_peak(cluster: Cluster, until: Callable[[], bool]) -> tuple[int, int]:
    """The most replicas asked for and the most predictor pods ready, while ``until`` is false."""
    replicas = ready = 0
    while not until():
        replicas = max(replicas, cluster.replicas())
        ready = max(ready, len(cluster.predictor_ips()))
        await asyncio.sleep(0.05)
    return replicas, ready


async def wake(cluster: Cluster, activator_ip: str) -> float:
    """One V2 request at zero through ``activator_ip``: held until the controller has scaled 0 -> 1
    (within 2 s: the activator's push pokes it, no waiting for a tick) and a pod is ready, then
    answered with the model's output; the seconds it took.

    At zero means no replica asked for and no pod the activator would send to. Pods scaled away
    drain for the queue-proxy's 30 s quiet period and serve what still reaches them meanwhile, so
    the activator must have dropped them (its watch: milliseconds) before the request goes."""
    assert cluster.replicas() == 0 and cluster.predictor_ips() == []
    await wait_until(
        lambda: asyncio.to_thread(lambda: (activator_revision(activator_ip) or {}).get("endpoints") == []),
        5,
        f"activator {activator_ip} holding no endpoint",
    )
    infer = Inference(activator_ip)
    sent = time.monotonic()
    first = asyncio.create_task(asyncio.to_thread(infer, [1.0, 2.0, 3.0, 4.0]))
    try:
        woke = await wait_until(lambda: cluster.replicas() == 1 or first.done(), 5, cluster.describe)
        assert not first.done(), "answered while at zero"
        assert cluster.replicas() == 1 and woke < 2.0
        assert await asyncio.wait_for(first, START_S) == [3.0, 6.0, 9.0, 12.0]
    finally:
        await asyncio.gather(first, return_exceptions=True)
        infer.close()
    return time.monotonic() - sent


def test_an_inference_service_at_zero_wakes_for_a_held_v2_request_scales_with_load_and_idles_to_zero(
    tmp_path,
):
    repository = tmp_path / "models"
    extra = "dynamic_batching { max_queue_delay_microseconds: 100000 }"  # each request waits ~100 ms
    write_scale_model(repository, MODEL, 1, FACTOR, max_batch_size=64, extra=extra)

    async def body(kubelet: Kubelet, kube: Kube) -> None:
        cluster = Cluster(kube, kubelet)
        await asyncio.to_thread(kube.core.create_namespaced_config_map, SYSTEM, config_autoscaler())
        async with (
            leading_controller(kube) as controller,
            sidecar_webhook(kube, controller, tmp_path / "certs"),
        ):
            port = int(controller.status_server.url.rsplit(":", 1)[1])
            deployment, service = activators(port, write_kubeconfig(tmp_path / "kubeconfig", kube.server.url))
            await asyncio.to_thread(kube.core.create_namespaced_service, SYSTEM, service)
            await asyncio.to_thread(kube.apps.create_namespaced_deployment, SYSTEM, deployment)
            selector = "app.kubernetes.io/name=kpa-activator"
            await wait_until(lambda: len(cluster.ready_ips(SYSTEM, selector)) == 2, START_S, cluster.describe)
            activator_ips = cluster.ready_ips(SYSTEM, selector)

            # What a user applies, and what KServe makes of it.
            isvc = inference_service(repository, tmp_path / "cache")
            stored = await asyncio.to_thread(
                kube.custom.create_namespaced_custom_object,
                "serving.kserve.io", "v1beta1", NS, "inferenceservices", isvc,
            )  # fmt: skip
            await asyncio.to_thread(kube.apps.create_namespaced_deployment, NS, kserve_predictor(stored))

            # Enrolled at zero: the revision's slice points at the activators, which know the revision.
            await wait_until(
                lambda: cluster.slice_view() == ("proxy", activator_ips),
                15,
                lambda: f"{cluster.slice_view()}",
            )
            for ip in activator_ips:
                await wait_until(
                    lambda ip=ip: asyncio.to_thread(activator_revision, ip), 15, f"activator {ip} routing"
                )
            assert cluster.replicas() == 0 and cluster.pods(NS, "") == []

            # A V2 request at zero is held; the controller scales 0 -> 1; the request is answered.
            cold_s = await wake(cluster, activator_ips[0])
            [pod] = cluster.pods(NS, f"app=isvc.{PREDICTOR}")
            names = [c["name"] for c in pod["spec"]["containers"]]
            assert names == ["kserve-container", QUEUE_PROXY], "the webhook added the queue-proxy"
            assert pod["metadata"]["labels"][REVISION_LABEL] == PREDICTOR
            await wait_until(lambda: cluster.slice_view()[0] == "serve", 5, lambda: f"{cluster.slice_view()}")

            # A short load through both activators drives it up.
            load = Load(activator_ips)
            running = asyncio.create_task(asyncio.to_thread(load.run, LOAD_S))
            peak_replicas, peak_ready = await watch_peak(cluster, running.done)
            await running
            assert peak_replicas >= 2 and peak_ready >= 2, (peak_replicas, peak_ready, cluster.describe())
            assert load.lost == [], load.lost[:5]
            assert all(n > 0 for n in load.by_activator.values()), load.by_activator

            # Idle: back to the activators, then to zero.
            idle = await wait_until(
                lambda: cluster.replicas() == 0 and cluster.predictor_ips() == [], 90, cluster.describe
            )
            assert cluster.slice_view() == ("proxy", activator_ips)
            # At zero again, through the other activator: held and answered as the first time.
            again_s = await wake(cluster, activator_ips[1])
            print(
                f"\ncold starts {cold_s:.2f} s and {again_s:.2f} s; load {load.answered} answered, 0 lost, "
                f"peak {peak_replicas} replicas / {peak_ready} ready; zero {idle:.1f} s after the load"
            )

    with with_node(entrypoints=ENTRYPOINTS) as (kubelet, kube):
        asyncio.run(body(kubelet, kube))
