"""The Kubernetes controller (``kubebackend.controller.Controller``) against the fake API server, with
pods made through the API, for the test_kube_controller*.py files.

Pods are records the tests create and mark Ready themselves (the fake runs no kubelet here); each
gets a fresh loopback address 127.a.b.c and, where a test needs the controller to scrape it, a tiny
real stats endpoint on that address's port 9090 answering ``GET /stats`` with a Stat JSON document.
A real `kpa queue-proxy` would need a user container and four ports per pod and adds nothing these
tests pin: the controller scrapes ``http://podIP:9090/stats`` and reads the Stat wire format, which
the queue-proxy's own tests pin on its side. The end-to-end tests on the kubelet stand-in run real
queue-proxies.

The controller runs on the test's event loop, as `kpa controller` runs on its own; the tests read
what it wrote straight from the fake's store (``cluster.read``), which is not an API request, so
request counters see only the controller's.
"""

from __future__ import annotations

import asyncio
import json
import random
import threading
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
from fakecluster_fixtures import Kube

from autoscaler.stat import RevisionKey
from fakecluster.resources import DEPLOYMENTS, ENDPOINTSLICES, EVENTS, SERVICES
from kubebackend.controller import Controller, ControllerOptions

NS = "ns"
SYSTEM = "kpa-system"
ACTIVATOR_IPS = ("10.9.0.1", "10.9.0.2", "10.9.0.3")
KPA_CLASS = {"autoscaling.knative.dev/class": "kpa.autoscaling.knative.dev"}
# At zero until a request comes, and serving straight from the pods as soon as one is ready.
FROM_ZERO = {
    **KPA_CLASS,
    "autoscaling.knative.dev/initial-scale": "0",
    "autoscaling.knative.dev/target-burst-capacity": "0",
}
ALLOW_ZERO = {"allow-zero-initial-scale": "true"}


def deployment(
    name: str, annotations: dict[str, str] | None = None, replicas: int = 0, **labels: str
) -> dict:
    labels = {"app": name, **labels}
    return {
        "metadata": {"name": name, "labels": labels, "annotations": dict(annotations or {})},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "user", "image": "user:1"}]},
            },
        },
    }


def activator_slice(ips: tuple[str, ...] = ACTIVATOR_IPS) -> dict:
    """The kpa-activator Service's EndpointSlice, as Kubernetes' EndpointSlice controller writes it."""
    return {
        "metadata": {
            "name": "kpa-activator-abcde",
            "labels": {"kubernetes.io/service-name": "kpa-activator"},
        },
        "addressType": "IPv4",
        "endpoints": [
            {
                "addresses": [ip],
                "conditions": {"ready": True},
                "targetRef": {"kind": "Pod", "name": f"act-{i}"},
            }
            for i, ip in enumerate(ips)
        ],
        "ports": [{"name": "http", "port": 8012, "protocol": "TCP"}],
    }


def config_map(data: dict[str, str]) -> dict:
    return {"metadata": {"name": "config-autoscaler"}, "data": data}


def loopback_ip() -> str:
    """A fresh 127.a.b.c (Linux answers on all of 127/8): pods of concurrent tests never share one."""
    return f"127.{random.randint(1, 254)}.{random.randint(1, 254)}.{random.randint(2, 254)}"


class StatsEndpoint:
    """A pod's queue-proxy stats port, cut down: ``GET /stats`` on ``ip:9090`` answers a Stat."""

    def __init__(self, ip: str, pod: str, concurrency: float = 0.0) -> None:
        self.ip, self.pod, self.concurrency = ip, pod, concurrency
        self.scrapes = 0
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> StatsEndpoint:
        self._server = await asyncio.start_server(self._serve, self.ip, 9090)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            self.scrapes += 1
            body = json.dumps(
                {"pod_name": self.pod, "average_concurrent_requests": self.concurrency}
            ).encode()
            head = f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
            writer.write(head.encode() + b"Connection: close\r\n\r\n" + body)
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


def make_pod(kube: Kube, name: str, app: str, ip: str, ready: bool = True) -> None:
    """A pod of Deployment ``app`` made through the API, then given an IP and (un)readiness as a
    kubelet would report them through the status subresource."""
    kube.core.create_namespaced_pod(
        NS,
        {
            "metadata": {"name": name, "labels": {"app": app}},
            "spec": {"containers": [{"name": "user", "image": "u"}]},
        },
    )
    status = "True" if ready else "False"
    kube.core.patch_namespaced_pod_status(
        name,
        NS,
        {"status": {"phase": "Running", "podIP": ip, "conditions": [{"type": "Ready", "status": status}]}},
    )


class Running:
    """A started controller on the test's loop for ``kube`` (status API on a free loopback port);
    ``lead=False``: a standby, its informers synced, that never became the leader."""

    def __init__(self, kube: Kube, lead: bool = True, **options: Any) -> None:
        options = {"host": "127.0.0.1", "port": 0, **options}
        self.kube = kube
        self.lead = lead
        self.controller = Controller(kube.server.configuration(), ControllerOptions(**options))

    async def __aenter__(self) -> Running:
        await self.controller.start(lead=self.lead, sync_timeout=10)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.controller.stop()
        left = [t.name for t in threading.enumerate() if t.name.startswith(("informer ", "kpa-api"))]
        assert not left, f"threads left behind by the controller: {left}"

    @staticmethod
    def revision(name: str) -> RevisionKey:
        return RevisionKey(NS, name)

    @property
    def url(self) -> str:
        return self.controller.status_server.url

    async def push(self, revision: str, concurrency: float, namespace: str = NS) -> httpx.Response:
        """What the activator sends on a request at zero: its concurrency for the revision (its
        reporter's immediate stat)."""
        stat = {"pod_name": "activator", "average_concurrent_requests": concurrency, "request_count": 1.0}
        async with httpx.AsyncClient() as http:
            return await http.post(
                self.url + "/stats", json=[{"namespace": namespace, "revision": revision, "stat": stat}]
            )

    # ---- what the controller wrote, read from the store (not an API request) ----------------------

    def slice(self, revision: str) -> dict | None:
        return self.kube.server.cluster.read(ENDPOINTSLICES, NS, f"{revision}-kpa")

    def service(self, revision: str) -> dict | None:
        return self.kube.server.cluster.read(SERVICES, NS, f"{revision}-kpa")

    def replicas(self, name: str) -> int | None:
        found = self.kube.server.cluster.read(DEPLOYMENTS, NS, name)
        return None if found is None else found["spec"].get("replicas")

    def slice_view(self, revision: str) -> tuple[str | None, list[str]]:
        """(mode, addresses) of the revision's EndpointSlice, (None, []) while there is none."""
        body = self.slice(revision)
        if body is None:
            return None, []
        mode = body["metadata"].get("annotations", {}).get("kpa-emulator.dev/mode")
        return mode, sorted(a for e in body["endpoints"] for a in e["addresses"])

    def events(self, name: str, reason: str | None = None, namespace: str = NS) -> list[dict]:
        listed = self.kube.server.cluster.list_collection(
            EVENTS, namespace, "", f"involvedObject.name={name}"
        )
        return [e for e in listed["items"] if reason is None or e.get("reason") == reason]


def run(test: Callable[[Kube], Awaitable[None]], seed: Callable[[Kube], object] | None = None) -> None:
    """``test`` on a fresh fake API server holding the activator slice and ``seed``'s objects."""
    with Kube() as kube:
        kube.discovery.create_namespaced_endpoint_slice(SYSTEM, activator_slice())
        if seed is not None:
            seed(kube)
        asyncio.run(test(kube))
