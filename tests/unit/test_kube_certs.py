"""kubebackend.certs, the webhook's pure admission answer and the caBundle patch: what certificate is made
(names, validity, CA and serving extensions), when it is renewed (the 80 % boundary to the second, and
every reason a stored one is unusable), what a rotation keeps in the bundle, and the Secret round trip."""

from __future__ import annotations

import base64
import ipaddress
import json
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID
from tables import named

from kubebackend import certs
from kubebackend.sidecar import QUEUE_PROXY, SidecarSpec
from kubebackend.webhook import AdmissionRequest, admit
from kubebackend.webhook_certs import ca_bundle_patch

NOW = datetime(2026, 3, 1, 12, 0, 0, 250_000, tzinfo=UTC)
SERVICE = certs.service_names("kpa-controller", "kpa-system")
NAMES = (*SERVICE, "127.0.0.1")


@pytest.fixture(scope="module")
def made() -> certs.WebhookCertificate:
    return certs.make_certificate(NOW, NAMES)


def test_the_certificate_names_the_service_as_kube_apiserver_calls_it_and_the_extra_sans(made):
    assert SERVICE[:2] == ("kpa-controller.kpa-system.svc", "kpa-controller.kpa-system.svc.cluster.local")
    assert certs.sans(made.certificate) == set(NAMES)
    alternatives = made.certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert alternatives.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    assert "127.0.0.1" not in alternatives.get_values_for_type(x509.DNSName)


def test_validity_defaults_to_a_year_from_now_with_notbefore_a_minute_back_for_clock_skew(made):
    whole = NOW.replace(microsecond=0)
    assert made.certificate.not_valid_after_utc == whole + timedelta(days=365)
    assert made.certificate.not_valid_before_utc == whole - timedelta(minutes=1)
    short = certs.make_certificate(NOW, NAMES, validity=timedelta(seconds=20)).certificate
    assert short.not_valid_after_utc - short.not_valid_before_utc == timedelta(seconds=22)  # backdated 1/10


def test_the_serving_certificate_is_signed_by_the_bundles_ca_and_fit_for_tls_servers_only(made):
    (ca,) = x509.load_pem_x509_certificates(made.ca_pem)
    made.certificate.verify_directly_issued_by(ca)
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert ca.extensions.get_extension_for_class(x509.KeyUsage).value.key_cert_sign
    leaf = made.certificate.extensions
    assert not leaf.get_extension_for_class(x509.BasicConstraints).value.ca
    assert list(leaf.get_extension_for_class(x509.ExtendedKeyUsage).value) == [
        ExtendedKeyUsageOID.SERVER_AUTH
    ]
    assert base64.b64decode(made.ca_bundle) == made.ca_pem


def test_renewal_falls_due_at_80_percent_of_the_validity_to_the_second():
    made = certs.make_certificate(NOW, NAMES, validity=timedelta(days=10))
    cert = made.certificate
    due = certs.renew_time(cert)
    assert due == cert.not_valid_before_utc + (cert.not_valid_after_utc - cert.not_valid_before_utc) * 0.8
    assert certs.renewal_reason(made, due - timedelta(microseconds=1), NAMES) is None
    reason = certs.renewal_reason(made, due, NAMES)
    assert reason is not None and "due for renewal" in reason
    assert certs.renewal_reason(made, due - timedelta(days=1), NAMES, renew_at=0.5) is not None


def _other_key(made: certs.WebhookCertificate) -> certs.WebhookCertificate:
    return certs.WebhookCertificate(made.cert_pem, certs.make_certificate(NOW, NAMES).key_pem, made.ca_pem)


def _other_ca(made: certs.WebhookCertificate) -> certs.WebhookCertificate:
    return certs.WebhookCertificate(made.cert_pem, made.key_pem, certs.make_certificate(NOW, NAMES).ca_pem)


def _garbage(made: certs.WebhookCertificate) -> certs.WebhookCertificate:
    return certs.WebhookCertificate(b"not a certificate", made.key_pem, made.ca_pem)


@pytest.mark.parametrize(
    ("case", "spoil", "names", "says"),
    named(
        [
            ("none stored", lambda made: None, NAMES, "no certificate"),
            ("a key of another certificate", _other_key, NAMES, "is not the key of tls.crt"),
            ("signed by no CA of ca.crt", _other_ca, NAMES, "no CA certificate in ca.crt signed"),
            ("tls.crt is not PEM", _garbage, NAMES, "does not parse"),
            (
                "a name asked for is missing",
                lambda made: made,
                (*NAMES, "10.0.0.7"),
                "does not cover 10.0.0.7",
            ),
        ]
    ),
)
def test_an_unusable_certificate_is_renewed_at_once_saying_why(made, case, spoil, names, says):
    reason = certs.renewal_reason(spoil(made), NOW, names)
    assert reason is not None and says in reason, reason


def test_a_renewal_keeps_the_previous_ca_after_the_new_one_until_it_expires(made):
    later = NOW + timedelta(days=300)
    renewed = certs.make_certificate(later, NAMES, previous_ca_pem=made.ca_pem)
    new_ca, kept = x509.load_pem_x509_certificates(renewed.ca_pem)
    renewed.certificate.verify_directly_issued_by(new_ca)
    made.certificate.verify_directly_issued_by(kept)  # a replica still serving the old one is trusted
    again = certs.make_certificate(later + timedelta(days=300), NAMES, previous_ca_pem=renewed.ca_pem)
    assert len(x509.load_pem_x509_certificates(again.ca_pem)) == 2  # the oldest CA dropped: one kept
    expired = certs.make_certificate(NOW + timedelta(days=400), NAMES, previous_ca_pem=made.ca_pem)
    assert len(x509.load_pem_x509_certificates(expired.ca_pem)) == 1


def test_a_secret_round_trips_as_kubernetes_io_tls_with_base64_data(made):
    secret = certs.secret_body(made, "kpa-webhook-certs", "kpa-system")
    assert secret["type"] == "kubernetes.io/tls"
    assert sorted(secret["data"]) == ["ca.crt", "tls.crt", "tls.key"]
    assert certs.from_secret(json.loads(json.dumps(secret))) == made


@pytest.mark.parametrize(
    ("case", "data", "says"),
    named(
        [
            ("no data", None, "has no data; it needs tls.crt, tls.key and ca.crt"),
            ("no ca.crt", {"tls.crt": "eA==", "tls.key": "eA=="}, "has no ca.crt"),
            ("not base64", {"tls.crt": "%%%", "tls.key": "eA==", "ca.crt": "eA=="}, "tls.crt is not base64"),
        ]
    ),
)
def test_a_secret_that_is_not_a_certificate_is_refused_naming_the_key(case, data, says):
    secret = {"metadata": {"name": "kpa-webhook-certs", "namespace": "kpa-system"}, "data": data}
    with pytest.raises(certs.CertificateError, match="Secret kpa-system/kpa-webhook-certs") as refused:
        certs.from_secret(secret)
    assert says in str(refused.value)


@pytest.mark.parametrize(
    ("case", "call", "says"),
    named(
        [
            ("a naive now", lambda: certs.make_certificate(NOW.replace(tzinfo=None), NAMES), "no timezone"),
            ("no names", lambda: certs.make_certificate(NOW, ()), "no names"),
            ("a name with a space", lambda: certs.make_certificate(NOW, ("a b.svc",)), "neither an IP"),
            (
                "validity of a second",
                lambda: certs.make_certificate(NOW, NAMES, timedelta(seconds=1)),
                "too short",
            ),
        ]
    ),
)
def test_bad_inputs_are_refused_naming_the_input_and_the_fix(case, call, says):
    with pytest.raises(certs.CertificateError, match=says):
        call()


def test_the_ca_bundle_patch_touches_only_entries_that_differ_merged_by_name():
    configuration = {
        "webhooks": [
            {"name": "a", "clientConfig": {"caBundle": "OLD", "service": {"name": "s"}}},
            {"name": "b", "clientConfig": {"caBundle": "NEW"}},
            {"name": "c", "clientConfig": {}},
        ]
    }
    assert ca_bundle_patch(configuration, "NEW") == {
        "webhooks": [
            {"name": "a", "clientConfig": {"caBundle": "NEW"}},
            {"name": "c", "clientConfig": {"caBundle": "NEW"}},
        ]
    }
    assert ca_bundle_patch({"webhooks": [{"name": "b", "clientConfig": {"caBundle": "NEW"}}]}, "NEW") is None
    assert ca_bundle_patch({}, "NEW") is None


SPEC = SidecarSpec("ns", "web", 0, 300, "kpa:t")


def _request(operation="CREATE", kind="Pod", labels=None, **extra):
    return AdmissionRequest.model_validate(
        {
            "uid": "u-1",
            "kind": {"group": "", "version": "v1", "kind": kind},
            "resource": {"group": "", "version": "v1", "resource": kind.lower() + "s"},
            "namespace": "ns",
            "operation": operation,
            "object": {
                "metadata": {"name": "p", "labels": labels or {"app": "web"}},
                "spec": {"containers": [{"name": "user", "image": "u"}]},
            },
            **extra,
        }
    )


def _enrolled(namespace, labels):
    return SPEC if labels.get("app") == "web" else None


def test_admit_patches_a_new_pod_of_an_enrolled_revision_and_copies_the_uid():
    response = admit(_request(), _enrolled)
    assert (response.uid, response.allowed, response.patchType) == ("u-1", True, "JSONPatch")
    operations = json.loads(base64.b64decode(response.patch))
    assert any(op["path"] == "/spec/containers/-" and op["value"]["name"] == QUEUE_PROXY for op in operations)


@pytest.mark.parametrize(
    ("case", "request_"),
    named(
        [
            ("a pod of no revision", _request(labels={"app": "other"})),
            ("an update", _request(operation="UPDATE")),
            ("another kind", _request(kind="ConfigMap")),
        ]
    ),
)
def test_admit_allows_without_a_patch_what_is_not_a_new_enrolled_pod(case, request_):
    response = admit(request_, _enrolled)
    assert (response.allowed, response.patch, response.patchType) == (True, None, None)


def test_a_failing_lookup_admits_the_pod_unpatched_with_a_warning_as_failure_policy_ignore_would():
    def broken(namespace, labels):
        raise RuntimeError("informer not synced")

    response = admit(_request(), broken)
    assert (response.allowed, response.patch) == (True, None)
    assert response.warnings and "informer not synced" in response.warnings[0]
