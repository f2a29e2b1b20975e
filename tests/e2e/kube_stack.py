"""The Kubernetes data path on the fake cluster's node, installed from manifests/base, for the
end-to-end tests: two `kpa controller` pods, two `kpa activator --kubernetes` pods, the webhook
configuration, config-autoscaler with short windows, and a plain Deployment ``web`` enrolled at zero.

The controllers run as pods of Deployment ``kpa-controller``, not as subprocesses, because that is
what the product's HA rests on: the elector labels *its pod* ``kpa-emulator.dev/leader``, Service
``kpa-controller-leader`` follows the label (the activators' stat pushes reach the leader only
through it), Service ``kpa-controller`` reaches both replicas' webhooks (the API server calls the
webhook through it), and a killed leader is a pod whose processes died, replaced by its Deployment.

Manifests are read as they are (YAML files of manifests/base; kustomize only adds the image tag), with
what the fake needs changed and nothing else: the image runs through the kubelet's ``entrypoints``
(``kpa-emulator/kpa`` is ``python -m kpa``), every container gets ``KUBECONFIG`` (no ServiceAccount
token on the fake), readiness probes run every second, the election's durations are short, and the
activators push to ``$(HOST_IP):<port>`` — a ``ServiceProxy`` of ``kpa-controller-leader`` on the
node, since the fake has no DNS. Pods run as local processes on 127.x addresses (docs/fake-cluster.md).
"""

from __future__ import annotations

import contextlib
import copy
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import yaml
from component.fakecluster_fixtures import Kube, with_node, write_kubeconfig
from waiting import wait_until_blocking

from fakecluster.kubelet import Kubelet
from fakecluster.resources import DEPLOYMENTS, ENDPOINTSLICES, LEASES, PODS
from fakecluster.service_proxy import ServiceProxy

ROOT = Path(__file__).resolve().parents[2]
BASE = ROOT / "manifests" / "base"
IMAGE = "kpa-emulator/kpa"
SYSTEM, NS = "kpa-system", "demo"
HOST = "web-kpa.demo.svc.cluster.local"  # what a client in the cluster calls
LEASE = (3, 2, 0.5)  # lease duration, renew deadline, retry period (s): the manifests' are 15, 10, 2
CONFIG = {"stable-window": "6s", "scale-to-zero-grace-period": "1s", "allow-zero-initial-scale": "true"}
START_S = 45.0  # pods are Python processes on a shared 2-core machine: starting many takes a while


def manifest(name: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all((BASE / name).read_text()) if doc]


def find(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    return copy.deepcopy(next(d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name))


def web_deployment(**annotations: str) -> dict[str, Any]:
    """``web``: the sample app (50 ms per request) at zero, enrolled, container concurrency 2."""
    return {
        "metadata": {
            "name": "web",
            "annotations": {
                "autoscaling.knative.dev/class": "kpa.autoscaling.knative.dev",
                "autoscaling.knative.dev/min-scale": "0",
                "autoscaling.knative.dev/initial-scale": "0",
                "kpa-emulator.dev/container-concurrency": "2",
                **annotations,
            },
        },
        "spec": {
            "replicas": 0,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {
                    "containers": [
                        {
                            "name": "user",
                            "image": "sample-app",
                            "command": [sys.executable, "-m", "kpa.sample_app"],
                            "args": ["--host", "0.0.0.0", "--port", "8080", "--delay", "0.05"],
                            "ports": [{"containerPort": 8080}],
                            "readinessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 1},
                        }
                    ]
                },
            },
        },
    }


class KubeStack:
    """The running stack and what tests read of it (the store is read directly: no API request)."""

    def __init__(self, kubelet: Kubelet, kube: Kube, leader: ServiceProxy) -> None:
        self.kubelet, self.kube, self.leader = kubelet, kube, leader
        self.cluster = kube.server.cluster
        self.web: ServiceProxy | None = None

    # -- reading ---------------------------------------------------------------------------------

    def pods(self, namespace: str, app_label: str, value: str) -> list[dict[str, Any]]:
        return self.cluster.list_collection(PODS, namespace, f"{app_label}={value}", "")["items"]

    def ready_ips(self, namespace: str, app_label: str, value: str) -> list[str]:
        return sorted(
            p["status"]["podIP"]
            for p in self.pods(namespace, app_label, value)
            if not p["metadata"].get("deletionTimestamp")
            and any(c["type"] == "Ready" and c["status"] == "True" for c in p["status"].get("conditions", []))
        )

    def pod_ip(self, namespace: str, name: str) -> str:
        return str(self.cluster.get(PODS, namespace, name)["status"].get("podIP") or "")

    def pod_at(self, namespace: str, ip: str) -> str:
        """The name of the live pod at ``ip``."""
        pods = self.cluster.list_collection(PODS, namespace, "", f"status.podIP={ip}")["items"]
        return next(p["metadata"]["name"] for p in pods if p["status"].get("phase") == "Running")

    def controllers(self) -> list[str]:
        return self.ready_ips(SYSTEM, "app.kubernetes.io/name", "kpa-controller")

    def activators(self) -> list[str]:
        return self.ready_ips(SYSTEM, "app.kubernetes.io/name", "kpa-activator")

    def web_pods(self) -> list[dict[str, Any]]:
        return self.pods(NS, "app", "web")

    def replicas(self) -> int:
        return int(self.cluster.read(DEPLOYMENTS, NS, "web")["spec"].get("replicas") or 0)

    def slice_view(self) -> tuple[str | None, list[str]]:
        body = self.cluster.read(ENDPOINTSLICES, NS, "web-kpa")
        if body is None:
            return None, []
        mode = (body["metadata"].get("annotations") or {}).get("kpa-emulator.dev/mode")
        return mode, sorted(a for e in body.get("endpoints") or [] for a in e["addresses"])

    def holder(self) -> str:
        lease = self.cluster.read(LEASES, SYSTEM, "kpa-controller")
        return str(((lease or {}).get("spec") or {}).get("holderIdentity") or "")

    def leader_pod(self) -> str:
        """The pod name of the Lease holder (identity: pod name and a random suffix)."""
        return self.holder().rsplit("_", 1)[0]

    def status(self) -> dict[str, Any] | None:
        """The web revision's row of the leader's /status, through Service kpa-controller-leader."""
        try:
            doc = httpx.get(self.leader.url + "/status", timeout=2, trust_env=False).json()
        except (httpx.HTTPError, ValueError):
            return None
        return next((r for r in doc.get("revisions", []) if r["name"] == "web"), None)

    def describe(self) -> str:
        """Every pod's phase and the tail of its logs: the failure message of a stuck wait."""
        lines = [f"lease holder {self.holder()!r}, web replicas {self.replicas()}, slice {self.slice_view()}"]
        for namespace in (SYSTEM, NS):
            for pod in self.cluster.list_collection(PODS, namespace, "", "")["items"]:
                name = pod["metadata"]["name"]
                lines.append(
                    f"== {namespace}/{name} {pod['status'].get('phase')} {pod['status'].get('podIP')}"
                )
                lines.append(self.kubelet.logs(namespace, name)[-4000:])
        return "\n".join(lines)

    # -- starting --------------------------------------------------------------------------------

    def install(self) -> None:
        """manifests/base as the fake runs it (module docstring), then ``web``; returns once two
        controllers (one leading, its webhook's caBundle patched) and two activators are ready."""
        core, apps = self.kube.core, self.kube.apps
        config = find(manifest("config-autoscaler.yaml"), "ConfigMap", "config-autoscaler")
        config["data"].update(CONFIG)
        core.create_namespaced_config_map(SYSTEM, config)
        webhook = find(manifest("webhook.yaml"), "MutatingWebhookConfiguration", "kpa-sidecar-injector")
        self.kube.admission.create_mutating_webhook_configuration(webhook)
        controller_docs, activator_docs = manifest("controller.yaml"), manifest("activator.yaml")
        for name in ("kpa-controller", "kpa-controller-leader"):
            core.create_namespaced_service(SYSTEM, find(controller_docs, "Service", name))
        core.create_namespaced_service(SYSTEM, find(activator_docs, "Service", "kpa-activator"))

        controller = find(controller_docs, "Deployment", "kpa-controller")
        container = controller["spec"]["template"]["spec"]["containers"][0]
        lease, renew, retry = LEASE
        container["args"] += [
            f"--lease-duration={lease}",
            f"--renew-deadline={renew}",
            f"--retry-period={retry}",
        ]
        container["readinessProbe"]["periodSeconds"] = 1
        apps.create_namespaced_deployment(SYSTEM, controller)

        activator = find(activator_docs, "Deployment", "kpa-activator")
        container = activator["spec"]["template"]["spec"]["containers"][0]
        container["args"] = [
            f"--autoscaler-url=http://$(HOST_IP):{self.leader.port}/stats"
            if arg.startswith("--autoscaler-url=")
            else arg
            for arg in container["args"]
        ]
        container["env"].append(
            {"name": "HOST_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.hostIP"}}}
        )
        container["readinessProbe"]["periodSeconds"] = 1
        apps.create_namespaced_deployment(SYSTEM, activator)

        wait_until_blocking(lambda: len(self.controllers()) == 2, START_S, self.describe)
        wait_until_blocking(lambda: len(self.activators()) == 2, START_S, self.describe)
        wait_until_blocking(lambda: self.leader.endpoints() != [], START_S, self.describe)  # labelled
        wait_until_blocking(self._ca_bundle_patched, START_S, self.describe)

    def _ca_bundle_patched(self) -> bool:
        found = self.kube.admission.read_mutating_webhook_configuration("kpa-sidecar-injector")
        return all(w.client_config.ca_bundle for w in found.webhooks)

    def enrol_web(self, **annotations: str) -> ServiceProxy:
        """Create ``web`` at zero; once its slice lists the activators and both activators know the
        revision, a ServiceProxy of ``web-kpa`` (the address clients call)."""
        self.kube.apps.create_namespaced_deployment(NS, web_deployment(**annotations))
        wait_until_blocking(
            lambda: self.slice_view()[0] == "proxy" and len(self.slice_view()[1]) == 2, START_S, self.describe
        )
        for ip in self.activators():
            wait_until_blocking(
                lambda ip=ip: _get(f"http://{ip}:8085/revisions/{NS}/web") == 200, 10, self.describe
            )
        self.web = ServiceProxy(self.kube.server, NS, "web-kpa", port_name="http").start()
        return self.web


def _get(url: str) -> int:
    try:
        return httpx.get(url, timeout=2, trust_env=False).status_code
    except httpx.HTTPError:
        return 0


@contextlib.contextmanager
def kube_stack(tmp_path: Path) -> Iterator[KubeStack]:
    """The stack installed and running; on exit every proxy, pod process and server stops."""
    kubeconfig = tmp_path / "kubeconfig"
    options = {
        "max_pods": 20,
        "entrypoints": {IMAGE: [sys.executable, "-m", "kpa"]},
        "env": {"KUBECONFIG": str(kubeconfig), "NO_PROXY": "*"},
        "log_dir": tmp_path / "pods",
    }
    (tmp_path / "pods").mkdir()
    with with_node(**options) as (kubelet, kube):
        write_kubeconfig(kubeconfig, kube.server.url)  # before any pod starts: they read it then
        with ServiceProxy(kube.server, SYSTEM, "kpa-controller-leader", port_name="http") as leader:
            stack = KubeStack(kubelet, kube, leader)
            try:
                stack.install()
                yield stack
            except BaseException:
                # pytest shortens a long assertion message: the whole picture goes to the output
                print(f"\n---- the stack when the test failed ----\n{stack.describe()}", flush=True)
                raise
            finally:
                if stack.web is not None:
                    stack.web.close()
