"""The webhook's certificate over its life: rotation on the real clock with a certificate valid for a
few seconds, a foreign caBundle repatched, API failures and a taken port retried, answers in
milliseconds (admission itself: test_kube_webhook.py).
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import statistics
import time
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from cryptography import x509
from fakecluster_fixtures import NAMESPACE, Kube
from kube_webhook_fixtures import (
    Running,
    _bundle_patched,
    containers,
    lookup,
    pod,
    run,
    url_configuration,
)
from waiting import wait_until

from kubebackend import certs
from kubebackend.rbac import CONTROLLER_CALLS, SYSTEM_NAMESPACE, WEBHOOK_CONFIGURATION
from kubebackend.sidecar import QUEUE_PROXY
from kubebackend.webhook_certs import run_webhook

pytestmark = pytest.mark.timeout(60)


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
