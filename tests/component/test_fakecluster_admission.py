"""Mutating admission on the fake API server: a pod create calls the registered webhook over HTTPS
with an AdmissionReview v1 and stores what its JSONPatch makes of the pod, as kube-apiserver does.

The project's sidecar injector is such a webhook; the fake must call it the way a cluster does
(TLS checked against the configuration's caBundle, the review's fields, the patch applied), or an
injector tested here could fail on a cluster.
"""

import base64
import datetime
import ipaddress
import json
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from fakecluster_fixtures import NAMESPACE, Kube, config_map
from kubernetes.client import ApiException
from tables import named


def certificate(names, issuer_key=None, issuer=None):
    """A key and certificate for ``names`` (DNS names and IPs), self-signed unless an issuer is given."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
    now = datetime.datetime.now(datetime.UTC)
    alternatives = [
        x509.IPAddress(ipaddress.ip_address(name)) if name[0].isdigit() else x509.DNSName(name)
        for name in names
    ]
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer or subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName(alternatives), critical=False)
        .add_extension(x509.BasicConstraints(ca=issuer is None, path_length=None), critical=True)
    )
    return key, builder.sign(issuer_key or key, hashes.SHA256())


def pem(key, cert):
    return (
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ),
        cert.public_bytes(serialization.Encoding.PEM),
    )


class Webhook:
    """An HTTPS admission webhook on 127.0.0.1: records each review and answers with ``answer(request)``."""

    def __init__(self, tmp_path, answer, names=("hook.ns.svc", "127.0.0.1")):
        ca_key, ca = certificate(["test-ca"])
        key, cert = certificate(list(names), ca_key, ca.subject)
        key_pem, cert_pem = pem(key, cert)
        (tmp_path / "key.pem").write_bytes(key_pem)
        (tmp_path / "cert.pem").write_bytes(cert_pem)
        self.ca_bundle = base64.b64encode(ca.public_bytes(serialization.Encoding.PEM)).decode()
        self.reviews, self.paths = [], []
        webhook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                review = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                webhook.reviews.append(review)
                webhook.paths.append(self.path)
                body = json.dumps(
                    {
                        "apiVersion": "admission.k8s.io/v1",
                        "kind": "AdmissionReview",
                        "response": {"uid": review["request"]["uid"], **answer(review["request"])},
                    }
                )
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body.encode())

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


def json_patch(*operations):
    return {
        "allowed": True,
        "patchType": "JSONPatch",
        "patch": base64.b64encode(json.dumps(list(operations)).encode()).decode(),
    }


INJECT = json_patch(
    {"op": "add", "path": "/metadata/labels/injected", "value": "yes"},
    {"op": "add", "path": "/spec/containers/-", "value": {"name": "queue-proxy", "image": "qp:1"}},
)


def configuration(client_config, failure_policy="Fail", object_selector=None, resources=("pods",)):
    webhook = {
        "name": "sidecar.kpa.dev",
        "clientConfig": client_config,
        "admissionReviewVersions": ["v1"],
        "sideEffects": "None",
        "failurePolicy": failure_policy,
        "timeoutSeconds": 2,
        "rules": [
            {"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": list(resources)}
        ],
    }
    if object_selector:
        webhook["objectSelector"] = object_selector
    return {"metadata": {"name": "kpa-sidecar"}, "webhooks": [webhook]}


def pod(name="p", **labels):
    return {
        "metadata": {"name": name, "labels": labels},
        "spec": {"containers": [{"name": "user", "image": "u"}]},
    }


@pytest.fixture
def kube():
    with Kube() as running:
        yield running


@pytest.fixture
def hook(tmp_path):
    answers = {"answer": lambda request: INJECT}
    webhook = Webhook(tmp_path, lambda request: answers["answer"](request))
    webhook.answers = answers
    yield webhook
    webhook.close()


def by_url(hook):
    return {"url": f"https://127.0.0.1:{hook.port}/mutate", "caBundle": hook.ca_bundle}


def test_pod_create_stores_what_the_matching_webhooks_json_patch_makes_of_it(kube, hook):
    kube.admission.create_mutating_webhook_configuration(configuration(by_url(hook)))
    created = kube.core.create_namespaced_pod(NAMESPACE, pod(app="a"))
    assert created.metadata.labels == {"app": "a", "injected": "yes"}
    assert [container.name for container in created.spec.containers] == ["user", "queue-proxy"]
    (review,) = hook.reviews
    request = review["request"]
    assert (review["apiVersion"], review["kind"]) == ("admission.k8s.io/v1", "AdmissionReview")
    assert request["kind"] == {"group": "", "version": "v1", "kind": "Pod"}
    assert request["resource"] == {"group": "", "version": "v1", "resource": "pods"}
    assert (request["operation"], request["namespace"], request["name"]) == ("CREATE", NAMESPACE, "p")
    assert request["object"]["spec"]["containers"][0]["name"] == "user"
    assert hook.paths == ["/mutate?timeout=2s"]


def test_webhook_is_not_called_for_what_its_rules_and_object_selector_leave_out(kube, hook):
    selector = {"matchLabels": {"kpa.dev/enrolled": "true"}}
    kube.admission.create_mutating_webhook_configuration(
        configuration(by_url(hook), object_selector=selector)
    )
    assert kube.core.create_namespaced_pod(NAMESPACE, pod("plain")).metadata.labels == {}
    kube.core.create_namespaced_config_map(NAMESPACE, config_map("c", **{"kpa.dev/enrolled": "true"}))
    assert hook.reviews == []
    enrolled = kube.core.create_namespaced_pod(NAMESPACE, pod("enrolled", **{"kpa.dev/enrolled": "true"}))
    assert enrolled.metadata.labels["injected"] == "yes"
    assert len(hook.reviews) == 1


def test_a_denial_reaches_the_client_with_the_webhooks_code_and_message(kube, hook):
    hook.answers["answer"] = lambda request: {
        "allowed": False,
        "status": {"code": 403, "message": "no sidecar"},
    }
    kube.admission.create_mutating_webhook_configuration(configuration(by_url(hook)))
    with pytest.raises(ApiException) as denied:
        kube.core.create_namespaced_pod(NAMESPACE, pod())
    assert denied.value.status == 403
    assert (
        json.loads(denied.value.body)["message"]
        == 'admission webhook "sidecar.kpa.dev" denied the request: no sidecar'
    )
    assert kube.core.list_namespaced_pod(NAMESPACE).items == []


@pytest.mark.parametrize(
    ("policy", "created"),
    named(
        [("Fail", False), ("Ignore", True)],
        lambda policy, created: f"failurePolicy {policy}: {'created' if created else 'refused'}",
    ),
)
def test_an_unreachable_webhook_fails_the_create_or_is_skipped_as_its_failure_policy_says(
    kube, hook, policy, created
):
    hook.close()  # nothing listens on its port any more
    kube.admission.create_mutating_webhook_configuration(configuration(by_url(hook), failure_policy=policy))
    if created:
        assert kube.core.create_namespaced_pod(NAMESPACE, pod()).metadata.labels == {}
        return
    with pytest.raises(ApiException) as failed:
        kube.core.create_namespaced_pod(NAMESPACE, pod())
    assert failed.value.status == 500
    assert 'failed calling webhook "sidecar.kpa.dev"' in json.loads(failed.value.body)["message"]


def test_a_webhook_certificate_the_ca_bundle_does_not_sign_fails_the_create(kube, hook, tmp_path):
    other_ca = base64.b64encode(
        certificate(["other-ca"])[1].public_bytes(serialization.Encoding.PEM)
    ).decode()
    kube.admission.create_mutating_webhook_configuration(
        configuration({**by_url(hook), "caBundle": other_ca})
    )
    with pytest.raises(ApiException) as failed:
        kube.core.create_namespaced_pod(NAMESPACE, pod())
    assert failed.value.status == 500
    assert hook.reviews == []


@pytest.mark.parametrize("named", [False, True], ids=["numbered targetPort", "named targetPort"])
def test_a_service_reference_is_called_through_its_endpoint_slice_with_tls_for_the_service_name(
    kube, tmp_path, named
):
    hook = Webhook(
        tmp_path, lambda request: INJECT, names=["hook.ns.svc"]
    )  # no IP: TLS must name the service
    # A named targetPort (the manifest's "https-webhook") is resolved by the slice's port of the same
    # name as the Service port, as kube-apiserver resolves it.
    target: int | str = "https-webhook" if named else hook.port
    port = {"name": "https", "port": 443, "targetPort": target}
    kube.core.create_namespaced_service("ns", {"metadata": {"name": "hook"}, "spec": {"ports": [port]}})
    kube.discovery.create_namespaced_endpoint_slice(
        "ns",
        {
            "metadata": {"name": "hook-1", "labels": {"kubernetes.io/service-name": "hook"}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": ["127.0.0.1"], "conditions": {"ready": True}}],
            "ports": [{"name": "https", "port": hook.port}] if named else [],
        },
    )
    client_config = {
        "service": {"namespace": "ns", "name": "hook", "path": "/inject"},
        "caBundle": hook.ca_bundle,
    }
    kube.admission.create_mutating_webhook_configuration(configuration(client_config))
    try:
        assert kube.core.create_namespaced_pod(NAMESPACE, pod()).metadata.labels == {"injected": "yes"}
        assert hook.paths == ["/inject?timeout=2s"]
    finally:
        hook.close()
