"""The sidecar injector as the cluster calls it: ``run_webhook`` against the fake API server, which calls
it over HTTPS on every pod create and checks its certificate against the caBundle our code patched.

Pods are created through the official client and come back as the API server stored them, so what
is pinned is the whole path: Secret made, caBundle patched, TLS verified, review parsed, patch
applied. The certificate's life (rotation, API failures, a taken port) is in test_kube_webhook_certs.py.
"""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import Mapping
from datetime import UTC, datetime

import httpx
import pytest
import yaml
from cryptography import x509
from kube_webhook_fixtures import (
    ROOT,
    Running,
    containers,
    lookup,
    pod,
    run,
)
from kubernetes.client import ApiException
from tables import named

from kubebackend import certs
from kubebackend.rbac import SYSTEM_NAMESPACE
from kubebackend.sidecar import QUEUE_PROXY, REVISION_LABEL, SidecarSpec
from kubebackend.webhook import NotReady

pytestmark = pytest.mark.timeout(60)


def test_a_pod_of_an_enrolled_revision_is_created_with_the_queue_proxy(tmp_path):
    async def body(running: Running) -> None:
        created = await running.create_pod(pod("web-1", app="web"))
        assert containers(created) == ["user", QUEUE_PROXY]
        assert created.metadata.labels == {"app": "web", REVISION_LABEL: "web"}
        assert created.spec.containers[0].readiness_probe is None  # moved into the queue-proxy
        assert created.spec.termination_grace_period_seconds == 120
        env = {e.name: e.value for e in created.spec.containers[1].env}
        assert (env["SERVING_REVISION"], env["CONTAINER_CONCURRENCY"]) == ("web", "8")
        secret = await running.secret()
        assert (
            certs.renewal_reason(secret, datetime.now(UTC), ["kpa-controller.kpa-system.svc", "127.0.0.1"])
            is None
        )
        assert await running.served_certificate() == x509.load_pem_x509_certificate(
            secret.cert_pem
        ).public_bytes(certs.serialization.Encoding.DER)

    run(body, tmp_path)


def test_a_pod_created_while_the_controller_starts_is_refused_retryably_then_gets_its_sidecar(tmp_path):
    """The controller's lookup raises NotReady until its watches have listed: the pod is refused with
    a 503 saying to retry (its ReplicaSet does), never admitted without its queue-proxy."""
    synced = False

    def starting(namespace: str, labels: Mapping[str, str]) -> SidecarSpec | None:
        if not synced:
            raise NotReady("the controller is starting: waiting for the first list of deployments")
        return lookup(namespace, labels)

    async def body(running: Running) -> None:
        nonlocal synced
        with pytest.raises(ApiException) as refused:
            await running.create_pod(pod("web-1", app="web"))
        assert refused.value.status == 503
        message = json.loads(refused.value.body)["message"]
        assert "not ready yet" in message and "retry" in message and "first list" in message, message
        synced = True
        created = await running.create_pod(pod("web-1", app="web"))
        assert containers(created) == ["user", QUEUE_PROXY]

    run(body, tmp_path, answer=starting)


def test_a_pod_of_no_revision_is_stored_as_it_was_sent(tmp_path):
    async def body(running: Running) -> None:
        created = await running.create_pod(pod("other-1", app="other"))
        assert containers(created) == ["user"]
        assert created.metadata.labels == {"app": "other"}
        assert created.spec.containers[0].readiness_probe.http_get.path == "/ready"

    run(body, tmp_path)


def test_the_manifests_service_reference_reaches_the_webhook_with_tls_for_the_service_name(tmp_path):
    """manifests/base/webhook.yaml as installed: called through Service kpa-controller's endpoints,
    TLS checked for kpa-controller.kpa-system.svc (the fake does not accept the IP here)."""
    manifest = yaml.safe_load((ROOT / "manifests/base/webhook.yaml").read_text())
    assert "caBundle" not in manifest["webhooks"][0]["clientConfig"]  # ours to patch in

    async def body(running: Running) -> None:
        kube, port = running.kube, running.server.port
        await asyncio.to_thread(
            kube.core.create_namespaced_service,
            SYSTEM_NAMESPACE,
            {"metadata": {"name": "kpa-controller"}, "spec": {"ports": [{"port": 443, "targetPort": port}]}},
        )
        await asyncio.to_thread(
            kube.discovery.create_namespaced_endpoint_slice,
            SYSTEM_NAMESPACE,
            {
                "metadata": {
                    "name": "kpa-controller-1",
                    "labels": {"kubernetes.io/service-name": "kpa-controller"},
                },
                "addressType": "IPv4",
                "endpoints": [{"addresses": ["127.0.0.1"], "conditions": {"ready": True}}],
            },
        )
        created = await running.create_pod(pod("web-1", app="web"))
        assert containers(created) == ["user", QUEUE_PROXY]  # failurePolicy Ignore: a TLS failure shows here

    run(body, tmp_path, configuration=lambda: manifest)


MALFORMED = named(
    [
        ("not JSON", b"{not json", "the body is not JSON"),
        ("a list", b"[]", "body"),
        (
            "no request",
            json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"}),
            "request",
        ),
        (
            "v1beta1",
            json.dumps({"apiVersion": "admission.k8s.io/v1beta1", "kind": "AdmissionReview", "request": {}}),
            "apiVersion",
        ),
        (
            "no uid",
            json.dumps(
                {
                    "apiVersion": "admission.k8s.io/v1",
                    "kind": "AdmissionReview",
                    "request": {
                        "kind": {"kind": "Pod"},
                        "resource": {"resource": "pods"},
                        "operation": "CREATE",
                    },
                }
            ),
            "request.uid",
        ),
    ]
)


@pytest.mark.parametrize(("case", "content", "named_field"), MALFORMED)
def test_a_malformed_review_is_a_400_naming_what_is_wrong_and_the_server_keeps_serving(
    tmp_path, case, content, named_field
):
    async def body(running: Running) -> None:
        secret = await running.secret()
        context = ssl.create_default_context(cadata=secret.ca_pem.decode())
        async with httpx.AsyncClient(verify=context, trust_env=False, timeout=5) as client:
            url = f"https://127.0.0.1:{running.server.port}/mutate-pods"
            answer = await client.post(url, content=content, headers={"Content-Type": "application/json"})
            assert answer.status_code == 400, answer.text
            message = answer.json()["message"]
            assert message.startswith("not an admission.k8s.io/v1 AdmissionReview"), message
            assert named_field in message, message
        created = await running.create_pod(pod("web-1", app="web"))  # still serving
        assert containers(created) == ["user", QUEUE_PROXY]

    run(body, tmp_path)
