"""The webhook's TLS certificates: made, judged and stored as data; no clock read, no file, no API call.

kube-apiserver calls the sidecar injector over HTTPS and trusts only the CAs in the webhook
configuration's ``caBundle``, for the name ``kpa-controller.kpa-system.svc``. Nothing in a plain
cluster issues such a certificate, so the controller makes its own: a self-signed CA and a serving
certificate it signs, kept in a ``kubernetes.io/tls``-style Secret (``tls.crt``, ``tls.key``,
``ca.crt``) so every controller replica serves the same one and a restart keeps it.

Rotation is decided here and carried out by ``kubebackend.webhook_certs``: a certificate is renewed
once :data:`RENEW_AT` (80 %) of its validity has passed, long before it expires, and at once when
it does not cover the names asked for or the Secret holds something unusable. Each renewal makes a
new CA too, and ``ca.crt`` keeps the previous CA after the new one (until it expires): a replica
that has not yet picked up the new Secret still serves a certificate the patched ``caBundle``
trusts, so no pod is admitted without its sidecar during the switch.

Keys are ECDSA P-256 (what Go's and OpenSSL's TLS prefer; made in microseconds, where RSA takes tens
of milliseconds). The time is always passed in (``now``, timezone-aware UTC); only key generation
draws randomness. The module imports ``datetime`` for its types, which keeps it out of the
"no clock" pure-core list even though it never reads the clock.
"""

from __future__ import annotations

import base64
import ipaddress
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

DEFAULT_VALIDITY = timedelta(days=365)
RENEW_AT = 0.8  # renew once this share of the validity has passed
MAX_BACKDATE = timedelta(minutes=1)  # notBefore this far back: the API server's clock may lag ours
TLS_CERT, TLS_KEY, CA_CERT = "tls.crt", "tls.key", "ca.crt"  # the Secret's keys (kubernetes.io/tls)
SECRET_TYPE = "kubernetes.io/tls"
ORGANIZATION = "kpa-emulator"


_LABEL = r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_DNS_NAME = re.compile(rf"(\*\.)?{_LABEL}(\.{_LABEL})*")


class CertificateError(ValueError):
    """Certificate material that cannot be used; the message names the input and the fix."""


@dataclass(frozen=True, slots=True)
class WebhookCertificate:
    """A serving certificate, its key and the CA bundle that verifies it, all PEM.

    ``ca_pem`` may hold several CA certificates: the one that signed ``cert_pem`` first, then the
    previous one kept through a rotation (module docstring). Its base64 is the ``caBundle``.
    """

    cert_pem: bytes
    key_pem: bytes
    ca_pem: bytes

    @property
    def ca_bundle(self) -> str:
        """``clientConfig.caBundle``: the base64 (standard alphabet) of the PEM CA certificates."""
        return base64.b64encode(self.ca_pem).decode("ascii")

    @property
    def certificate(self) -> x509.Certificate:
        return x509.load_pem_x509_certificate(self.cert_pem)


def service_names(service: str, namespace: str) -> tuple[str, ...]:
    """The DNS names a Service is called by; kube-apiserver uses ``<service>.<namespace>.svc``."""
    return (
        f"{service}.{namespace}.svc",
        f"{service}.{namespace}.svc.cluster.local",
        f"{service}.{namespace}",
        service,
    )


def _general_name(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        pass
    try:
        dns = name.encode("idna").decode("ascii")
    except UnicodeError:
        dns = ""
    if not _DNS_NAME.fullmatch(dns):
        raise CertificateError(
            f"subject alternative name {name!r} is neither an IP address nor a DNS name; "
            f"give names like kpa-controller.kpa-system.svc or 127.0.0.1"
        )
    return x509.DNSName(dns)


def _seconds(moment: datetime) -> datetime:
    """``moment`` in whole seconds: X.509 times carry no fraction, so what is stored is what is judged."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise CertificateError(f"now={moment.isoformat()} has no timezone; pass datetime.now(UTC)")
    return moment.replace(microsecond=0)


def _pem(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.PEM)


def make_certificate(
    now: datetime,
    names: Sequence[str],
    validity: timedelta = DEFAULT_VALIDITY,
    previous_ca_pem: bytes = b"",
) -> WebhookCertificate:
    """A new CA and a serving certificate for ``names`` (the first is the subject), valid from about
    ``now`` for ``validity``.

    ``previous_ca_pem``, the ``ca.crt`` being replaced: its first certificate (the CA that signed
    the certificate being replaced) stays in the new bundle after the new CA if it has not expired.
    """
    if not names:
        raise CertificateError("no names for the serving certificate; give at least the Service's DNS name")
    if validity <= timedelta(seconds=1):
        raise CertificateError(
            f"validity {validity} is too short; give more than one second (default 1 year)"
        )
    now = _seconds(now)
    alternatives = [_general_name(name) for name in names]
    backdate = min(MAX_BACKDATE, validity / 10)
    start, end = now - backdate, now + validity
    stamp = now.strftime("%Y%m%dT%H%M%SZ")

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca_name = x509.Name(  # unique per CA (the key id), so an old and a new CA never share a name
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANIZATION),
            x509.NameAttribute(NameOID.COMMON_NAME, f"kpa-webhook-ca-{stamp}-{ca_ski.digest.hex()[:8]}"),
        ]
    )
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(cert_sign=True), critical=True)
        .add_extension(ca_ski, critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANIZATION),
            x509.NameAttribute(NameOID.COMMON_NAME, names[0][:64]),
        ]
    )
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(cert_sign=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(alternatives), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    kept = [
        old
        for old in _load_cas(previous_ca_pem)[:1]
        if old.not_valid_after_utc > now and old.subject != ca.subject
    ]
    return WebhookCertificate(
        cert_pem=_pem(certificate),
        key_pem=key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ),
        ca_pem=b"".join(_pem(c) for c in [ca, *kept]),
    )


def _key_usage(cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,  # ECDSA keys sign; they never encipher
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _load_cas(ca_pem: bytes) -> list[x509.Certificate]:
    if not ca_pem.strip():
        return []
    try:
        return x509.load_pem_x509_certificates(ca_pem)
    except ValueError:
        return []


def renew_time(certificate: x509.Certificate, renew_at: float = RENEW_AT) -> datetime:
    """When ``certificate`` is due for renewal: ``renew_at`` of the way from notBefore to notAfter."""
    start, end = certificate.not_valid_before_utc, certificate.not_valid_after_utc
    return start + (end - start) * renew_at


def sans(certificate: x509.Certificate) -> set[str]:
    """The certificate's DNS names and IP addresses, as text."""
    try:
        extension = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return set()
    return {str(name) for name in extension.get_values_for_type(x509.DNSName)} | {
        str(address) for address in extension.get_values_for_type(x509.IPAddress)
    }


def renewal_reason(
    current: WebhookCertificate | None,
    now: datetime,
    names: Iterable[str],
    renew_at: float = RENEW_AT,
) -> str | None:
    """Why ``current`` must be replaced at ``now`` (for the log), or None while it is good to serve.

    Replaced when: there is none; it does not parse; its key is not its certificate's; no CA of the
    bundle signed it; it lacks one of ``names``; or ``renew_at`` of its validity has passed.
    """
    if current is None:
        return "there is no certificate yet"
    try:
        certificate = current.certificate
        key = serialization.load_pem_private_key(current.key_pem, password=None)
    except (ValueError, TypeError) as error:
        return f"{TLS_CERT} or {TLS_KEY} does not parse ({error})"
    if key.public_key() != certificate.public_key():
        return f"{TLS_KEY} is not the key of {TLS_CERT}"
    if not any(_signed_by(certificate, ca) for ca in _load_cas(current.ca_pem)):
        return f"no CA certificate in {CA_CERT} signed {TLS_CERT}"
    missing = sorted(set(names) - sans(certificate))
    if missing:
        return f"it does not cover {', '.join(missing)}"
    due = renew_time(certificate, renew_at)
    if now >= due:
        end = certificate.not_valid_after_utc
        return f"it expires at {end.isoformat()} and was due for renewal at {due.isoformat()}"
    return None


def _signed_by(certificate: x509.Certificate, ca: x509.Certificate) -> bool:
    try:
        certificate.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def secret_body(current: WebhookCertificate, name: str, namespace: str) -> dict[str, object]:
    """The Secret holding ``current``, as the API's JSON (``data`` base64, as Secrets carry it)."""

    def encoded(pem: bytes) -> str:
        return base64.b64encode(pem).decode("ascii")

    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {"app.kubernetes.io/name": "kpa-controller", "app.kubernetes.io/part-of": ORGANIZATION},
        },
        "type": SECRET_TYPE,
        "data": {
            TLS_CERT: encoded(current.cert_pem),
            TLS_KEY: encoded(current.key_pem),
            CA_CERT: encoded(current.ca_pem),
        },
    }


def from_secret(secret: Mapping[str, object]) -> WebhookCertificate:
    """The certificate a Secret's JSON holds; :class:`CertificateError` names what is missing.

    Only decodes: whether the content is usable is :func:`renewal_reason`'s question.
    """
    meta = secret.get("metadata")
    where = f"Secret {meta.get('namespace')}/{meta.get('name')}" if isinstance(meta, Mapping) else "Secret"
    data = secret.get("data")
    if not isinstance(data, Mapping):
        raise CertificateError(f"{where} has no data; it needs {TLS_CERT}, {TLS_KEY} and {CA_CERT}")
    values = {}
    for key in (TLS_CERT, TLS_KEY, CA_CERT):
        value = data.get(key)
        if not isinstance(value, str) or not value:
            raise CertificateError(f"{where} has no {key}; it needs {TLS_CERT}, {TLS_KEY} and {CA_CERT}")
        try:
            values[key] = base64.b64decode(value, validate=True)
        except ValueError:
            raise CertificateError(f"{where}: {key} is not base64 (Secret data is base64 of PEM)") from None
    return WebhookCertificate(cert_pem=values[TLS_CERT], key_pem=values[TLS_KEY], ca_pem=values[CA_CERT])
