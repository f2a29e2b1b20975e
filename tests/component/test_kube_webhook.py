"""The sidecar injector as the cluster calls it: ``run_webhook`` against the fake API server, which calls
it over HTTPS on every pod create and checks its certificate against the caBundle our code patched.

Pods are created through the official client and come back as the API server stored them, so what
is pinned is the whole path: Secret made, caBundle patched, TLS verified, review parsed, patch
applied. Rotation runs on the real clock with a certificate valid for a few seconds.
"""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
import statistics
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from cryptography import x509
from fakecluster_fixtures import NAMESPACE, Kube
from tables import named
from waiting import wait_until

from kubebackend import certs
from kubebackend.rbac import CONTROLLER_CALLS, SYSTEM_NAMESPACE, WEBHOOK_CONFIGURATION, WEBHOOK_SECRET
from kubebackend.sidecar import QUEUE_PROXY, REVISION_LABEL, SidecarSpec
from kubebackend.webhook import WebhookServer
from kubebackend.webhook_certs import run_webhook

pytestmark = pytest.mark.timeout(60)

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
    **options: Any,
) -> None:
    """``test`` with the injector running and its caBundle patched into the configuration (by URL
    unless ``configuration`` gives another); stopped however it ends. ``options`` go to run_webhook."""
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
                    lookup,
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


def test_rotation_replaces_the_certificate_and_repatches_the_ca_bundle_and_pods_are_still_injected(tmp_path):
    """Valid 6 s: renewed at 80 % (about 4.8 s in); the Secret, caBundle and served certificate all
    move to the new one, the bundle keeps the old CA for replicas not yet switched, and a pod created
    afterwards is injected with TLS verified against the new caBundle."""

    async def body(running: Running) -> None:
        first = await running.secret()
        await wait_until(
            lambda: _changed(running, first), 15, "the Secret to hold a renewed certificate", interval=0.1
        )
        renewed = await running.secret()
        assert renewed.cert_pem != first.cert_pem
        new_ca, kept_ca = x509.load_pem_x509_certificates(renewed.ca_pem)
        assert kept_ca == x509.load_pem_x509_certificates(first.ca_pem)[0]
        renewed.certificate.verify_directly_issued_by(new_ca)
        await wait_until(_bundle_patched(running), 10, "the caBundle re-patched")
        await wait_until(lambda: _serves_other_than(running, first), 10, "the renewed certificate served")
        created = await running.create_pod(pod("web-after", app="web"))
        assert containers(created) == ["user", QUEUE_PROXY]

    run(body, tmp_path, validity=timedelta(seconds=6))


async def _changed(running: Running, first: certs.WebhookCertificate) -> bool:
    return (await running.secret()).cert_pem != first.cert_pem


async def _serves_other_than(running: Running, first: certs.WebhookCertificate) -> bool:
    return await running.served_certificate() != _der(first)


def _der(certificate: certs.WebhookCertificate) -> bytes:
    return certificate.certificate.public_bytes(certs.serialization.Encoding.DER)


def test_api_failures_are_retried_until_the_webhook_serves_and_every_call_is_granted(tmp_path):
    """500s on the Secret read, a 409 on its create and a 500 on the caBundle patch only delay it; the
    calls made are all in CONTROLLER_CALLS (the RBAC the manifests grant)."""
    with Kube() as kube:
        kube.admission.create_mutating_webhook_configuration(url_configuration(1))
        kube.server.cluster.faults.reset_counts()  # count only the webhook's own calls
        kube.server.fail_next(2, "get", "secrets", 500)
        kube.server.fail_next(1, "create", "secrets", 409)
        kube.server.fail_next(1, "patch", "mutatingwebhookconfigurations", 500)

        async def body() -> None:
            stop = asyncio.Event()
            task = asyncio.create_task(
                run_webhook(
                    kube.api_client,
                    lookup,
                    0,
                    SYSTEM_NAMESPACE,
                    stop,
                    host="127.0.0.1",
                    extra_sans=("127.0.0.1",),
                    cert_dir=tmp_path,
                    backoff_base_s=0.05,
                )
            )
            try:
                running = Running(kube)
                await wait_until(_bundle_patched(running), 15, "the caBundle patched despite the failures")
                assert not task.done()
            finally:
                stop.set()
                await asyncio.wait_for(task, 10)

        asyncio.run(body())
        verbs = ("get", "list", "watch", "create", "update", "patch", "delete", "deletecollection")
        made = {
            (group, resource, verb)
            for group, resource in (
                ("", "secrets"),
                ("admissionregistration.k8s.io", "mutatingwebhookconfigurations"),
            )
            for verb in verbs
            if kube.server.requests(verb, resource)
        }
        assert made - CONTROLLER_CALLS == set()
        assert ("", "secrets", "update") not in made  # nothing to renew: the Secret was created once


def test_answers_take_milliseconds_not_a_delayed_ack(tmp_path):
    """The server binds its own TCP socket with TCP_NODELAY in effect: a keep-alive review is answered
    in milliseconds (Nagle would hold each answer for the client's 40 ms delayed ACK)."""

    async def body(running: Running) -> None:
        secret = await running.secret()
        context = ssl.create_default_context(cadata=secret.ca_pem.decode())
        review = {
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": "u-1",
                "kind": {"group": "", "version": "v1", "kind": "Pod"},
                "resource": {"group": "", "version": "v1", "resource": "pods"},
                "namespace": NAMESPACE,
                "operation": "CREATE",
                "object": pod("web-1", app="web"),
            },
        }
        async with httpx.AsyncClient(verify=context, trust_env=False, timeout=5) as client:
            url = f"https://127.0.0.1:{running.server.port}/mutate-pods"
            times = []
            for _ in range(30):
                start = time.perf_counter()
                answer = await client.post(url, json=review)
                times.append(time.perf_counter() - start)
                assert answer.json()["response"]["patchType"] == "JSONPatch"
        assert statistics.median(times[5:]) < 0.02, f"median {statistics.median(times[5:]) * 1000:.1f} ms"

    run(body, tmp_path)


def test_a_ca_bundle_of_another_ca_is_repatched(tmp_path):
    """Someone reset the caBundle (a re-applied manifest that carried one): the next pass puts ours back."""

    async def body(running: Running) -> None:
        other = certs.make_certificate(datetime.now(UTC), ["other"]).ca_bundle
        await asyncio.to_thread(
            running.kube.admission.patch_mutating_webhook_configuration,
            WEBHOOK_CONFIGURATION,
            {
                "webhooks": [
                    {"name": "sidecar-injector.kpa-emulator.dev", "clientConfig": {"caBundle": other}}
                ]
            },
        )
        await wait_until(_bundle_patched(running), 10, "our caBundle back")

    run(body, tmp_path, check_interval_s=0.2)


def test_a_taken_port_is_logged_and_retried_never_raised(tmp_path, caplog):
    """Another process holds the port: run_webhook says which port and the fix, keeps trying, and
    still stops when asked."""
    with Kube() as kube, socket.socket() as holder:
        kube.admission.create_mutating_webhook_configuration(url_configuration(1))
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        taken = holder.getsockname()[1]

        async def body() -> None:
            stop = asyncio.Event()
            task = asyncio.create_task(
                run_webhook(
                    kube.api_client,
                    lookup,
                    taken,
                    SYSTEM_NAMESPACE,
                    stop,
                    host="127.0.0.1",
                    cert_dir=tmp_path,
                    backoff_base_s=0.05,
                )
            )
            try:
                await wait_until(
                    lambda: "--webhook-port" in caplog.text or task.done(), 10, "the port refused"
                )
                await wait_until(lambda: caplog.text.count("cannot listen on") >= 2 or task.done(), 10)
                assert not task.done()
                assert f"cannot listen on 127.0.0.1:{taken}" in caplog.text
            finally:
                stop.set()
                await asyncio.wait_for(task, 10)

        asyncio.run(body())
