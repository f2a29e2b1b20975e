"""The webhook's certificate kept current, and the webhook served with it: the shell around ``certs``.

At controller start and then periodically (every ``check_interval_s``, and at the moment the
certificate falls due), :class:`CertificateKeeper` makes the cluster agree with itself:

1. **Secret** ``kpa-webhook-certs`` (in the controller's namespace): read; created when missing;
   replaced when ``certs.renewal_reason`` says so (unusable, missing a name, 80 % of its validity
   gone). Replaced with its ``resourceVersion``, so when two replicas renew at once one wins and
   the other gets 409, re-reads and serves the winner's certificate.
2. **caBundle** of every webhook entry of the MutatingWebhookConfiguration ``kpa-sidecar-injector``:
   a strategic-merge patch (entries merged by name) where it differs from the Secret's ``ca.crt``.
3. **Files** the TLS server loads (``tls.crt``, ``tls.key`` in ``cert_dir``): written when they
   differ from the Secret, and only once the caBundle trusts their CA (or when nothing is served
   yet) — a server that switched first would fail the API server's TLS check until the patch.

Every API failure is logged and retried with a jittered backoff (``kubebackend.retry``), never
raised to the controller: the webhook fails open (``failurePolicy: Ignore``), so a controller that
cannot reach the API server keeps scaling and serves the certificate it has.

:func:`run_webhook` is the one entry point the controller calls (docs/kubernetes.md, "Webhook").
The API calls are exactly those ``kubebackend.rbac.CONTROLLER_CALLS`` grants: Secrets get, create,
update; mutatingwebhookconfigurations get, patch. Each runs on a worker thread (the official client
blocks), with a request timeout so a silent API server never holds one forever.

With ``certificates="cert-manager"`` (``kpa controller --webhook-certs cert-manager``,
manifests/cert-manager) the controller makes nothing: cert-manager's Certificate writes the Secret
and its cainjector fills the caBundle. :class:`SecretReader` only reads the Secret (get, every
``EXTERNAL_CHECK_INTERVAL_S``), writes the files when it changed and the server reloads; until the
Secret exists nothing is served, and the log says what to install.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
import shutil
import tempfile
from collections.abc import Callable, Coroutine, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from kubernetes.client import AdmissionregistrationV1Api, ApiClient, ApiException, CoreV1Api

from kubebackend import certs
from kubebackend.rbac import CONTROLLER, WEBHOOK_CONFIGURATION, WEBHOOK_SECRET
from kubebackend.retry import backoff_delay, describe, status_of
from kubebackend.webhook import Lookup, WebhookServer

log = logging.getLogger("kpa.webhook")

WEBHOOK_PORT = 8443
CHECK_INTERVAL_S = 600.0  # also how soon a replica serves a certificate another replica renewed
EXTERNAL_CHECK_INTERVAL_S = 30.0  # how soon a certificate cert-manager renewed is served
SELF, CERT_MANAGER = "self", "cert-manager"  # who makes the certificate: --webhook-certs
CERTIFICATE_SOURCES = (SELF, CERT_MANAGER)
MIN_WAIT_S = 0.05
REQUEST_TIMEOUT = (5.0, 30.0)  # (connect, read) seconds for each API call
BACKOFF_BASE_S = 0.5
BACKOFF_CAP_S = 30.0
Clock = Callable[[], datetime]


class MissingConfiguration(Exception):
    """The MutatingWebhookConfiguration is not installed: nothing calls the webhook, nothing to patch."""


class MissingSecret(Exception):
    """cert-manager mode, and the Secret cert-manager's Certificate writes is not there (yet)."""


def _utc_now() -> datetime:
    return datetime.now(UTC)


def ca_bundle_patch(configuration: Mapping[str, Any], ca_bundle: str) -> dict[str, Any] | None:
    """A strategic-merge patch giving every webhook entry ``ca_bundle``; None when all have it.

    Entries are merged by ``name`` (their patch merge key), so a patch never clobbers an entry
    added or reordered since the read, and fields other than ``caBundle`` are left alone.
    """
    entries = [
        {"name": webhook["name"], "clientConfig": {"caBundle": ca_bundle}}
        for webhook in configuration.get("webhooks") or []
        if isinstance(webhook, Mapping)
        and webhook.get("name")
        and (webhook.get("clientConfig") or {}).get("caBundle") != ca_bundle
    ]
    return {"webhooks": entries} if entries else None


def _write(path: Path, content: bytes, mode: int) -> None:
    """``content`` at ``path``, all or nothing (a rename), readable by us alone for a key."""
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(handle, mode)
        with os.fdopen(handle, "wb") as file:
            file.write(content)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


class CertificateKeeper:
    """Secret, caBundle and files made to agree (module docstring); one :meth:`sync` per check."""

    def __init__(
        self,
        api_client: ApiClient,
        namespace: str,
        cert_dir: Path,
        names: Sequence[str],
        validity: timedelta = certs.DEFAULT_VALIDITY,
        renew_at: float = certs.RENEW_AT,
        clock: Clock = _utc_now,
    ) -> None:
        self._core = CoreV1Api(api_client)
        self._admission = AdmissionregistrationV1Api(api_client)
        self.namespace = namespace
        self.names = tuple(names)
        self.validity = validity
        self.renew_at = renew_at
        self._clock = clock
        self.cert_file = cert_dir / certs.TLS_CERT
        self.key_file = cert_dir / certs.TLS_KEY
        self.served: certs.WebhookCertificate | None = None  # what the files hold
        self.files_version = 0  # bumped by each write of the files, so the server knows to reload
        self.renewals = 0

    async def _call(self, method: Callable[..., Any], *args: Any) -> Any:
        """One API call on a worker thread; a body read is JSON, not the client's models."""
        response = await asyncio.to_thread(
            method, *args, _request_timeout=REQUEST_TIMEOUT, _preload_content=False
        )
        return json.loads(response.data) if response.data else {}

    async def _read(self, method: Callable[..., Any], *args: Any) -> dict[str, Any] | None:
        try:
            found = await self._call(method, *args)
        except ApiException as error:
            if error.status == 404:
                return None
            raise
        return found if isinstance(found, dict) else None

    async def sync(self) -> certs.WebhookCertificate:
        """One pass of steps 1-3; the certificate now in the Secret. Raises what it could not do
        (after doing what it could), for the caller to retry."""
        current = await self._secret()
        bundle_error: Exception | None = None
        try:
            await self._ca_bundle(current)
        except Exception as error:
            bundle_error = error
        if current != self.served and (bundle_error is None or self.served is None):
            self.cert_file.parent.mkdir(parents=True, exist_ok=True)
            _write(self.key_file, current.key_pem, 0o600)
            _write(self.cert_file, current.cert_pem, 0o644)
            self.served = current
            self.files_version += 1
        if bundle_error is not None:
            raise bundle_error
        return current

    async def _secret(self) -> certs.WebhookCertificate:
        secret = await self._read(self._core.read_namespaced_secret, WEBHOOK_SECRET, self.namespace)
        current: certs.WebhookCertificate | None = None
        reason: str | None = f"Secret {self.namespace}/{WEBHOOK_SECRET} does not exist"
        if secret is not None:
            try:
                current = certs.from_secret(secret)
                reason = certs.renewal_reason(current, self._clock(), self.names, self.renew_at)
            except certs.CertificateError as error:
                reason = str(error)
        if reason is None and current is not None:
            return current
        made = certs.make_certificate(
            self._clock(), self.names, self.validity, current.ca_pem if current else b""
        )
        body = certs.secret_body(made, WEBHOOK_SECRET, self.namespace)
        if secret is None:
            await self._call(self._core.create_namespaced_secret, self.namespace, body)
        else:
            # Same type (immutable on the API server), same labels and annotations, our data, and the
            # resourceVersion read: a replica that renewed meanwhile makes this a 409, not a lost write.
            meta = dict(secret.get("metadata") or {})
            body["metadata"] = {
                key: meta[key]
                for key in ("name", "namespace", "labels", "annotations", "resourceVersion")
                if key in meta
            }
            body["type"] = secret.get("type") or certs.SECRET_TYPE
            await self._call(self._core.replace_namespaced_secret, WEBHOOK_SECRET, self.namespace, body)
        self.renewals += 1
        log.info(
            "webhook certificate renewed (%s); valid until %s, renewal due %s",
            reason,
            made.certificate.not_valid_after_utc.isoformat(),
            certs.renew_time(made.certificate, self.renew_at).isoformat(),
        )
        return made

    async def _ca_bundle(self, current: certs.WebhookCertificate) -> None:
        configuration = await self._read(
            self._admission.read_mutating_webhook_configuration, WEBHOOK_CONFIGURATION
        )
        if configuration is None:
            raise MissingConfiguration(
                f"MutatingWebhookConfiguration {WEBHOOK_CONFIGURATION} does not exist, so no pod is sent "
                f"to the webhook; apply manifests/base (kubectl apply -k manifests/base)"
            )
        patch = ca_bundle_patch(configuration, current.ca_bundle)
        if patch is not None:
            await self._call(
                self._admission.patch_mutating_webhook_configuration, WEBHOOK_CONFIGURATION, patch
            )
            names = ", ".join(entry["name"] for entry in patch["webhooks"])
            log.info("caBundle of %s patched (%s)", WEBHOOK_CONFIGURATION, names)

    def next_check_s(self, check_interval_s: float) -> float:
        """Seconds to the next pass: the interval, or sooner when the certificate falls due sooner."""
        if self.served is None:
            return check_interval_s
        due = certs.renew_time(self.served.certificate, self.renew_at)
        return max(MIN_WAIT_S, min(check_interval_s, (due - self._clock()).total_seconds()))


class SecretReader(CertificateKeeper):
    """cert-manager mode: the Secret read and served as it is; no Secret written, no caBundle patched."""

    async def sync(self) -> certs.WebhookCertificate:
        secret = await self._read(self._core.read_namespaced_secret, WEBHOOK_SECRET, self.namespace)
        if secret is None:
            raise MissingSecret(
                f"Secret {self.namespace}/{WEBHOOK_SECRET} does not exist, so the webhook does not serve "
                f"yet (--webhook-certs {CERT_MANAGER}): install cert-manager (https://cert-manager.io) "
                f"and apply manifests/cert-manager, whose Certificate writes it"
            )
        current = certs.from_secret(secret)
        try:
            key = serialization.load_pem_private_key(current.key_pem, password=None)
            matches = key.public_key() == current.certificate.public_key()
        except (ValueError, TypeError) as error:
            raise certs.CertificateError(
                f"Secret {self.namespace}/{WEBHOOK_SECRET}: {certs.TLS_CERT} or {certs.TLS_KEY} does not "
                f"parse ({error})"
            ) from None
        if not matches:
            raise certs.CertificateError(
                f"Secret {self.namespace}/{WEBHOOK_SECRET}: {certs.TLS_KEY} is not the key of "
                f"{certs.TLS_CERT}"
            )
        if current != self.served:
            self.cert_file.parent.mkdir(parents=True, exist_ok=True)
            _write(self.key_file, current.key_pem, 0o600)
            _write(self.cert_file, current.cert_pem, 0o644)
            first = self.served is None
            self.served = current
            self.files_version += 1
            log.info(
                "webhook certificate %s from Secret %s/%s (cert-manager's); valid until %s",
                "read" if first else "changed: reloaded",
                self.namespace,
                WEBHOOK_SECRET,
                current.certificate.not_valid_after_utc.isoformat(),
            )
        return current

    def next_check_s(self, check_interval_s: float) -> float:
        return check_interval_s


class _Serving:
    """The server as the keeper's files say: started on the first files, reloaded on each new write."""

    def __init__(
        self,
        keeper: CertificateKeeper,
        lookup: Lookup,
        host: str,
        port: int,
        on_serving: Callable[[WebhookServer], None] | None,
    ) -> None:
        self._keeper, self._lookup, self._host, self._port = keeper, lookup, host, port
        self._on_serving = on_serving
        self.server: WebhookServer | None = None
        self._loaded = 0  # the keeper's files_version the server has loaded

    async def catch_up(self) -> None:
        keeper = self._keeper
        if keeper.served is None or keeper.files_version == self._loaded:
            return
        if self.server is None:
            server = WebhookServer(self._lookup, keeper.cert_file, keeper.key_file, self._host, self._port)
            await server.start()  # raises OSError naming the port when it is taken
            self.server = server
            if self._on_serving is not None:
                self._on_serving(server)
        else:
            self.server.reload()
            log.info("webhook now serves the renewed certificate to new connections")
        self._loaded = keeper.files_version

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.stop()
            self.server = None


async def _unless_stopped(work: Coroutine[Any, Any, object], stop_event: asyncio.Event) -> bool:
    """Run ``work`` unless ``stop_event`` comes first (then it is cancelled): whether it finished.

    A hung API call would otherwise hold a controller's shutdown for the whole request timeout.
    """
    task = asyncio.ensure_future(work)
    stopped = asyncio.ensure_future(stop_event.wait())
    try:
        await asyncio.wait({task, stopped}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopped.cancel()
        if not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    if task.cancelled():
        return False
    task.result()  # raises what the work raised
    return True


async def run_webhook(
    api_client: ApiClient,
    lookup: Lookup,
    port: int,
    namespace: str,
    stop_event: asyncio.Event,
    *,
    host: str = "0.0.0.0",
    extra_sans: Sequence[str] = (),
    cert_dir: Path | None = None,
    validity: timedelta = certs.DEFAULT_VALIDITY,
    renew_at: float = certs.RENEW_AT,
    check_interval_s: float | None = None,
    certificates: str = SELF,
    backoff_base_s: float = BACKOFF_BASE_S,
    on_serving: Callable[[WebhookServer], None] | None = None,
    clock: Clock = _utc_now,
) -> None:
    """Serve the sidecar injector on ``port`` (HTTPS) until ``stop_event`` is set, keeping its
    certificate (Secret, caBundle, files) current; returns once the server has stopped.

    Never raises for the API server's failures or a taken port: it logs them and tries again with
    backoff. ``lookup`` is called on this event loop's thread. The certificate covers the
    ``kpa-controller`` Service's names in ``namespace`` plus ``extra_sans`` (every replica must be
    given the same, or they renew each other's certificate in turn). Files go to ``cert_dir``, by
    default a fresh directory under the temporary directory (the manifest's ``/tmp`` emptyDir),
    removed at the end. ``on_serving`` is told the server once it listens (tests read its port).
    ``certificates`` is who makes the certificate: ``self`` (the keeper) or ``cert-manager`` (only
    read: :class:`SecretReader`); ``check_interval_s`` defaults to each one's interval.
    """
    if certificates not in CERTIFICATE_SOURCES:
        raise ValueError(f"certificates: {certificates!r} is not one of {', '.join(CERTIFICATE_SOURCES)}")
    if check_interval_s is None:
        check_interval_s = CHECK_INTERVAL_S if certificates == SELF else EXTERNAL_CHECK_INTERVAL_S
    made_dir = cert_dir is None
    directory = Path(tempfile.mkdtemp(prefix="kpa-webhook-")) if cert_dir is None else cert_dir
    keeper = (CertificateKeeper if certificates == SELF else SecretReader)(
        api_client,
        namespace,
        directory,
        (*certs.service_names(CONTROLLER, namespace), *extra_sans),
        validity,
        renew_at,
        clock,
    )
    serving = _Serving(keeper, lookup, host, port, on_serving)
    failures = 0
    rng = random.Random()
    try:
        while not stop_event.is_set():
            try:
                try:
                    if not await _unless_stopped(keeper.sync(), stop_event):
                        break
                finally:  # serve whatever the files hold, even when the pass failed part-way
                    if not stop_event.is_set():
                        await serving.catch_up()
                failures = 0
                delay = keeper.next_check_s(check_interval_s)
            except Exception as error:
                failures += 1
                delay = backoff_delay(failures, rng, backoff_base_s, BACKOFF_CAP_S)
                log.warning(
                    "webhook certificate: try %d failed (%s); retrying in %.1f s",
                    failures, describe(error), delay,
                    exc_info=status_of(error) is None
                    and not isinstance(error, MissingConfiguration | MissingSecret | certs.CertificateError),
                )  # fmt: skip
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await stop_event.wait()
    finally:
        await serving.stop()
        if made_dir:
            shutil.rmtree(directory, ignore_errors=True)
