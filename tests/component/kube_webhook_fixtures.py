"""The webhook under test, run against the fake API server: shared by the admission and certificate tests."""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

from fakecluster_fixtures import NAMESPACE, Kube
from waiting import wait_until

from kubebackend import certs
from kubebackend.rbac import SYSTEM_NAMESPACE, WEBHOOK_CONFIGURATION, WEBHOOK_SECRET
from kubebackend.sidecar import SidecarSpec
from kubebackend.webhook import Lookup, WebhookServer
from kubebackend.webhook_certs import run_webhook

ROOT = Path(__file__).resolve().parents[2]
SPEC = SidecarSpec(
    namespace=NAMESPACE, revision="web", container_concurrency=8, timeout_seconds=120, image="kpa:t"
)


def lookup(namespace: str, labels: Mapping[str, str]) -> SidecarSpec | None:
    """The controller's view, reduced to one enrolled revision: pods labelled app=web in NAMESPACE."""
    return SPEC if namespace == NAMESPACE and labels.get("app") == "web" else None


def pod(name: str, **labels: str) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "containers": [
                {
                    "name": "user",
                    "image": "u",
                    "ports": [{"containerPort": 8080}],
                    "readinessProbe": {"httpGet": {"path": "/ready", "port": 8080}},
                }
            ]
        },
    }


def url_configuration(port: int) -> dict[str, Any]:
    """The injector by URL (the fake checks the IP SAN); Fail, so a TLS mistake is a 500, not a pod
    silently admitted without its sidecar."""
    return {
        "metadata": {"name": WEBHOOK_CONFIGURATION},
        "webhooks": [
            {
                "name": "sidecar-injector.kpa-emulator.dev",
                "clientConfig": {"url": f"https://127.0.0.1:{port}/mutate-pods"},
                "admissionReviewVersions": ["v1"],
                "sideEffects": "None",
                "failurePolicy": "Fail",
                "timeoutSeconds": 5,
                "rules": [
                    {
                        "operations": ["CREATE"],
                        "apiGroups": [""],
                        "apiVersions": ["v1"],
                        "resources": ["pods"],
                    }
                ],
            }
        ],
    }


class Running:
    """``run_webhook`` on this loop against a fake cluster, and what the tests read of it."""

    def __init__(self, kube: Kube, server: WebhookServer | None = None) -> None:
        self.kube, self.server = kube, server

    async def create_pod(self, body: dict[str, Any]) -> Any:
        # The blocking client on a thread: the fake calls back into this loop's webhook meanwhile.
        return await asyncio.to_thread(self.kube.core.create_namespaced_pod, NAMESPACE, body)

    async def secret(self) -> certs.WebhookCertificate:
        found = await asyncio.to_thread(
            self.kube.core.read_namespaced_secret, WEBHOOK_SECRET, SYSTEM_NAMESPACE, _preload_content=False
        )
        return certs.from_secret(json.loads(found.data))

    async def ca_bundles(self) -> list[str | None]:
        found = await asyncio.to_thread(
            self.kube.admission.read_mutating_webhook_configuration, WEBHOOK_CONFIGURATION
        )
        return [webhook.client_config.ca_bundle for webhook in found.webhooks]

    async def served_certificate(self) -> bytes:
        """The certificate a new TLS connection to the webhook gets (DER), unverified."""
        return await asyncio.to_thread(self._served_certificate)

    def _served_certificate(self) -> bytes:
        context = ssl.create_default_context()
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
        assert self.server is not None
        with (
            socket.create_connection(("127.0.0.1", self.server.port), timeout=5) as raw,
            context.wrap_socket(raw) as tls,
        ):
            return tls.getpeercert(binary_form=True) or b""


def run(
    test: Callable[[Running], Awaitable[None]],
    tmp_path: Path,
    configuration: Callable[[], dict[str, Any]] | None = None,
    answer: Lookup = lookup,
    **options: Any,
) -> None:
    """``test`` with the injector running and its caBundle patched into the configuration (by URL
    unless ``configuration`` gives another), answering with ``answer`` (default :func:`lookup`);
    stopped however it ends. ``options`` go to run_webhook."""
    with Kube() as kube:
        kube.admission.create_mutating_webhook_configuration(
            configuration() if configuration else url_configuration(1)
        )

        async def body() -> None:
            stop = asyncio.Event()
            serving: list[WebhookServer] = []
            task = asyncio.create_task(
                run_webhook(
                    kube.api_client,
                    answer,
                    0,
                    SYSTEM_NAMESPACE,
                    stop,
                    host="127.0.0.1",
                    extra_sans=("127.0.0.1",),
                    cert_dir=tmp_path / "certs",
                    backoff_base_s=0.05,
                    on_serving=serving.append,
                    **options,
                )
            )
            try:
                await wait_until(lambda: serving or task.done(), 10, "the webhook serving")
                if task.done():
                    task.result()
                server = serving[0]
                if configuration is None:  # now that the port is known, point the URL at it
                    await asyncio.to_thread(
                        kube.admission.patch_mutating_webhook_configuration,
                        WEBHOOK_CONFIGURATION,
                        url_configuration(server.port),
                    )
                running = Running(kube, server)
                await wait_until(
                    _bundle_patched(running), 10, lambda: "the caBundle patched to the Secret's ca.crt"
                )
                await test(running)
            finally:
                stop.set()
                await asyncio.wait_for(task, 10)

        asyncio.run(body())


def _bundle_patched(running: Running) -> Callable[[], Awaitable[bool]]:
    async def patched() -> bool:
        try:
            secret = await running.secret()
        except Exception:
            return False
        return set(await running.ca_bundles()) == {secret.ca_bundle}

    return patched


def containers(created: Any) -> list[str]:
    return [container.name for container in created.spec.containers]
