"""``--webhook-certs cert-manager``: the controller serves the certificate cert-manager's Certificate
wrote to Secret kpa-webhook-certs, never writes the Secret nor the caBundle (cainjector's), says what
to install while the Secret is missing, and serves a replaced Secret (cert-manager's renewal)."""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import UTC, datetime, timedelta

import pytest
from fakecluster_fixtures import Kube
from kube_webhook_fixtures import Running, containers, lookup, pod, url_configuration
from waiting import wait_until

from kubebackend import certs
from kubebackend.rbac import CONTROLLER, SYSTEM_NAMESPACE, WEBHOOK_CONFIGURATION, WEBHOOK_SECRET
from kubebackend.sidecar import QUEUE_PROXY
from kubebackend.webhook import WebhookServer
from kubebackend.webhook_certs import CERT_MANAGER, run_webhook

pytestmark = pytest.mark.timeout(60)

NAMES = (*certs.service_names(CONTROLLER, SYSTEM_NAMESPACE), "127.0.0.1")


def _issued(days: int) -> certs.WebhookCertificate:
    """What cert-manager's Certificate writes (tls.crt, tls.key, ca.crt), made here."""
    return certs.make_certificate(datetime.now(UTC), NAMES, timedelta(days=days))


def _der(certificate: certs.WebhookCertificate) -> bytes:
    return certificate.certificate.public_bytes(certs.serialization.Encoding.DER)


def test_cert_manager_mode_serves_the_secret_leaves_the_ca_bundle_and_follows_a_replaced_secret(
    tmp_path, caplog
):
    caplog.set_level(logging.INFO, logger="kpa.webhook")
    with Kube() as kube:
        kube.admission.create_mutating_webhook_configuration(url_configuration(1))

        def secret_version() -> str:
            found = kube.core.read_namespaced_secret(WEBHOOK_SECRET, SYSTEM_NAMESPACE, _preload_content=False)
            return str(json.loads(found.data)["metadata"]["resourceVersion"])

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
                    check_interval_s=0.2,
                    certificates=CERT_MANAGER,
                    backoff_base_s=0.05,
                    on_serving=serving.append,
                )
            )
            try:
                # No Secret yet: nothing served, nothing made, and the log says what to install.
                await wait_until(lambda: "apply manifests/cert-manager" in caplog.text or task.done(), 10)
                await asyncio.sleep(0.3)
                assert not serving and not task.done()
                assert "install cert-manager" in caplog.text
                listed = await asyncio.to_thread(kube.core.list_namespaced_secret, SYSTEM_NAMESPACE)
                assert [s.metadata.name for s in listed.items] == []

                first = _issued(90)  # cert-manager's Certificate becomes Ready
                await asyncio.to_thread(
                    kube.core.create_namespaced_secret,
                    SYSTEM_NAMESPACE,
                    certs.secret_body(first, WEBHOOK_SECRET, SYSTEM_NAMESPACE),
                )
                version = await asyncio.to_thread(secret_version)
                await wait_until(lambda: serving or task.done(), 10, "the webhook serving")
                assert not task.done()
                running = Running(kube, serving[0])
                assert await running.served_certificate() == _der(first)

                # The cainjector's job: the controller leaves the caBundle as it is (here: unset), so
                # the API server is pointed at the port with cert-manager's CA patched in by hand.
                assert await running.ca_bundles() == [None]
                configuration = url_configuration(running.server.port)  # type: ignore[union-attr]
                configuration["webhooks"][0]["clientConfig"]["caBundle"] = first.ca_bundle
                await asyncio.to_thread(
                    kube.admission.patch_mutating_webhook_configuration, WEBHOOK_CONFIGURATION, configuration
                )
                created = await running.create_pod(pod("web-1", app="web"))
                assert containers(created) == ["user", QUEUE_PROXY]

                # cert-manager renews: a new key and certificate in the same Secret.
                renewed = _issued(90)
                body = certs.secret_body(renewed, WEBHOOK_SECRET, SYSTEM_NAMESPACE)
                await asyncio.to_thread(
                    kube.core.replace_namespaced_secret, WEBHOOK_SECRET, SYSTEM_NAMESPACE, body
                )
                version = await asyncio.to_thread(secret_version)

                async def serves_renewed() -> bool:
                    return await running.served_certificate() == _der(renewed)

                await wait_until(serves_renewed, 10, "the replaced Secret's certificate served")
                assert "changed: reloaded" in caplog.text
                assert await running.ca_bundles() == [first.ca_bundle], "the caBundle is cainjector's"
                await asyncio.sleep(0.5)  # a few more reads: still nothing written
                assert await asyncio.to_thread(secret_version) == version
                assert (await running.secret()).cert_pem == renewed.cert_pem
            finally:
                stop.set()
                await asyncio.wait_for(task, 10)

        asyncio.run(body())


def test_an_unknown_certificate_source_is_refused(tmp_path):
    with pytest.raises(ValueError, match="cert-manager"):
        asyncio.run(
            run_webhook(None, lookup, 0, SYSTEM_NAMESPACE, asyncio.Event(), certificates="acme")  # type: ignore[arg-type]
        )
