"""The sidecar injector: an admission webhook that adds the queue-proxy to pods of enrolled revisions.

kube-apiserver POSTs an ``admission.k8s.io/v1`` AdmissionReview to ``/mutate-pods`` for every pod
created in a selected namespace (``manifests/base/webhook.yaml``) and applies the JSON Patch we
answer (kubernetes-wire.md §1.6). Which pods are enrolled is the controller's knowledge, not ours:
it hands in ``lookup(namespace, labels) -> SidecarSpec | None`` (its informers' view), and the
patch is ``kubebackend.sidecar.sidecar_patch``'s. So this module only speaks the wire format.

Answers, and why:

* a review that is not an AdmissionReview v1 with a request and a uid: **400** with a message naming
  what is wrong (there is no uid to answer to, and it is the caller's bug, not a pod's);
* a pod of an enrolled revision, on CREATE: allowed, with ``patchType: JSONPatch`` and the patch;
* anything else (no revision, another kind, another operation, a pod that has its queue-proxy):
  allowed, no patch;
* ``lookup`` raising :class:`NotReady` (the controller is starting: its caches have not listed, so
  it cannot tell an enrolled pod from another): **refused**, code 503, with a message saying it is
  retryable. The pod's ReplicaSet creates it again (with backoff) and a later try is answered
  properly, so a pod created while the controller starts is not admitted without its queue-proxy;
  a bare pod's creator sees the message;
* ``lookup`` or the patch failing otherwise: allowed without a patch, with a warning (``kubectl``
  prints it) and an error in our log — the same outcome as the webhook being down under the
  manifest's ``failurePolicy: Ignore`` (docs/kubernetes.md, "The webhook fails open"), never a 500.

The handler is ``async def`` on purpose: it runs on the event loop's thread, the thread that owns
the controller's informer caches, so ``lookup`` reads them without locks. FastAPI would run a plain
``def`` handler on a worker thread.

:class:`WebhookServer` serves the app with uvicorn over HTTPS on a socket it binds itself (TCP, so
asyncio sets ``TCP_NODELAY``: a socket made with protocol 0 would leave Nagle on and delay every
answer by the client's 40 ms delayed ACK), with an ``SSLContext`` it keeps: :meth:`reload` loads
the rotated certificate files into it, and every connection opened after that gets the new one.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import socket
import ssl
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, Final, Literal

import uvicorn
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from kubebackend.sidecar import SidecarSpec, sidecar_patch

log = logging.getLogger("kpa.webhook")

API_VERSION: Final = "admission.k8s.io/v1"
MUTATE_PATH = "/mutate-pods"
Lookup = Callable[[str, Mapping[str, str]], SidecarSpec | None]


class NotReady(Exception):
    """What ``lookup`` raises while it cannot answer yet (the controller's caches have not listed):
    the pod is refused with a retryable 503 instead of being admitted without its sidecar."""


class _Wire(BaseModel):
    """Fields named as on the wire (camelCase, so no aliases to keep in step); fields we do not read
    are kept, not refused, so a newer API server's additions pass."""

    model_config = ConfigDict(extra="allow")


class GroupVersionKind(_Wire):
    group: str = ""
    version: str = ""
    kind: str = ""


class GroupVersionResource(_Wire):
    group: str = ""
    version: str = ""
    resource: str = ""


class AdmissionRequest(_Wire):
    """``request`` of an AdmissionReview v1 (k/k ``api/admission/v1/types.go``)."""

    uid: str = Field(min_length=1)
    kind: GroupVersionKind
    resource: GroupVersionResource
    subResource: str = ""
    requestKind: GroupVersionKind | None = None
    requestResource: GroupVersionResource | None = None
    requestSubResource: str = ""
    name: str = ""  # empty on CREATE with generateName
    namespace: str = ""
    operation: Literal["CREATE", "UPDATE", "DELETE", "CONNECT"]
    userInfo: dict[str, Any] = Field(default_factory=dict)
    object: dict[str, Any] | None = None
    oldObject: dict[str, Any] | None = None
    dryRun: bool | None = None
    options: dict[str, Any] | None = None


class AdmissionReview(_Wire):
    """What kube-apiserver POSTs. Only v1 is served: the configuration asks for ``["v1"]``."""

    apiVersion: Literal["admission.k8s.io/v1"]
    kind: Literal["AdmissionReview"]
    request: AdmissionRequest


class ResponseStatus(_Wire):
    code: int | None = None
    reason: str | None = None
    message: str = ""


class AdmissionResponse(_Wire):
    uid: str
    allowed: bool
    status: ResponseStatus | None = None
    patchType: Literal["JSONPatch"] | None = None
    patch: str | None = None  # base64 (standard alphabet) of the JSON array of operations
    warnings: list[str] | None = None


class AdmissionReviewResponse(_Wire):
    """The answer: an AdmissionReview of the same apiVersion, ``response.uid`` the request's."""

    apiVersion: Literal["admission.k8s.io/v1"] = API_VERSION
    kind: Literal["AdmissionReview"] = "AdmissionReview"
    response: AdmissionResponse


class BadReview(_Wire):
    """A 400's body: what was wrong with the request and what a webhook caller must send."""

    message: str


def _is_pod(request: AdmissionRequest) -> bool:
    return request.kind.group == "" and request.kind.kind == "Pod" and request.resource.resource == "pods"


def admit(request: AdmissionRequest, lookup: Lookup) -> AdmissionResponse:
    """The answer to one review: the sidecar patch for a new pod of an enrolled revision, else none."""
    allowed = AdmissionResponse(uid=request.uid, allowed=True)
    if request.operation != "CREATE" or not _is_pod(request) or request.object is None:
        return allowed
    pod = request.object
    found = pod.get("metadata")
    meta: dict[str, Any] = found if isinstance(found, dict) else {}
    found = meta.get("labels")
    labels: dict[str, Any] = found if isinstance(found, dict) else {}
    namespace = request.namespace or str(meta.get("namespace") or "")
    name = request.name or str(meta.get("name") or meta.get("generateName") or "?")
    try:
        spec = lookup(namespace, {str(k): str(v) for k, v in labels.items()})
        operations = sidecar_patch(pod, spec) if spec is not None else []
    except NotReady as error:
        log.info("pod %s/%s refused for now: %s", namespace, name, error)
        message = (
            f"kpa sidecar injector: not ready yet ({error}); pod {namespace}/{name} is refused for now, "
            "retry shortly (a ReplicaSet retries by itself)"
        )
        return AdmissionResponse(
            uid=request.uid,
            allowed=False,
            status=ResponseStatus(code=503, reason="ServiceUnavailable", message=message),
        )
    except Exception as error:  # fail open, as failurePolicy Ignore does; say so where users look
        log.exception(
            "pod %s/%s: the sidecar injector failed; admitted without a queue-proxy", namespace, name
        )
        allowed.warnings = [
            f"kpa sidecar injector: pod {namespace}/{name} admitted without its queue-proxy "
            f"({type(error).__name__}: {error}); it will not be scaled until recreated"
        ]
        return allowed
    if not operations:
        return allowed
    log.info("pod %s/%s: injecting the queue-proxy of revision %s", namespace, name, spec and spec.revision)
    allowed.patchType = "JSONPatch"
    allowed.patch = base64.b64encode(json.dumps(operations, separators=(",", ":")).encode()).decode("ascii")
    return allowed


def _problem(errors: list[dict[str, Any]]) -> str:
    """One line naming each wrong field of a review, from pydantic's errors."""
    parts = []
    for error in errors[:5]:
        if error.get("type") == "json_invalid":
            reason = (error.get("ctx") or {}).get("error", "JSON decode error")
            parts.append(f"the body is not JSON ({reason})")
            continue
        where = ".".join(str(part) for part in error.get("loc", ()) if part != "body") or "body"
        parts.append(f"{where}: {error.get('msg', 'invalid')}")
    return "; ".join(parts)


def webhook_app(lookup: Lookup) -> FastAPI:
    """The FastAPI app: ``POST /mutate-pods`` (and OpenAPI at ``/openapi.json`` for the curious)."""
    app = FastAPI(title="kpa sidecar injector", version="1")

    @app.exception_handler(RequestValidationError)
    async def bad_review(request: Request, error: RequestValidationError) -> JSONResponse:
        """400, not FastAPI's 422: the API server treats the call as failed and the message says why."""
        problem = _problem(list(error.errors()))
        message = (
            f"not an {API_VERSION} AdmissionReview with a request and a uid: {problem}; "
            f'send one as application/json (the webhook configuration\'s admissionReviewVersions: ["v1"])'
        )
        log.warning("POST %s: 400 %s", request.url.path, message)
        return JSONResponse(status_code=400, content={"message": message})

    @app.post(
        MUTATE_PATH,
        response_model=AdmissionReviewResponse,
        response_model_exclude_none=True,
        responses={400: {"model": BadReview}},
    )
    async def mutate_pods(review: AdmissionReview) -> AdmissionReviewResponse:
        return AdmissionReviewResponse(response=admit(review.request, lookup))

    return app


def server_context(cert_file: Path, key_file: Path) -> ssl.SSLContext:
    """A TLS server context (1.2 or newer, HTTP/1.1) serving ``cert_file`` with ``key_file``."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_alpn_protocols(["http/1.1"])
    context.load_cert_chain(cert_file, key_file)
    return context


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket (``IPPROTO_TCP``: see the module docstring); ``port`` 0 picks a free one.

    OSError names the address and the fix when the port is taken or the host is not ours.
    """
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP, flags=socket.AI_PASSIVE
    )[0]
    listener = socket.socket(family, kind, proto)
    try:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(address)
        listener.listen(128)
    except OSError as error:
        listener.close()
        raise OSError(
            error.errno, f"the webhook cannot listen on {host}:{port} ({error.strerror}); "
            f"free the port or choose another with --webhook-port"
        ) from None  # fmt: skip
    listener.setblocking(False)
    return listener


class _Server(uvicorn.Server):
    """uvicorn without its signal handlers: the controller owns SIGTERM and stops us through ``stop``."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class WebhookServer:
    """The webhook app on uvicorn over HTTPS; ``start``/``stop`` on the running event loop."""

    def __init__(self, lookup: Lookup, cert_file: Path, key_file: Path, host: str, port: int) -> None:
        self._cert_file, self._key_file = cert_file, key_file
        self._host, self._requested_port = host, port
        self._context: ssl.SSLContext | None = None
        self._server: _Server | None = None
        self._task: asyncio.Task[None] | None = None
        self._app = webhook_app(lookup)
        self.port = 0  # the bound port, once started

    async def start(self) -> None:
        """Bind, load the certificate files and serve; returns once connections are accepted."""
        self._context = server_context(self._cert_file, self._key_file)
        listener = bind(self._host, self._requested_port)
        self.port = listener.getsockname()[1]
        context = self._context
        config = uvicorn.Config(
            self._app,
            lifespan="off",
            log_config=None,  # leave the process's logging as the controller set it up
            access_log=False,
            timeout_graceful_shutdown=5,
            ssl_context_factory=lambda _config, _default: context,
        )
        self._server = _Server(config)
        self._task = asyncio.get_running_loop().create_task(
            self._server.serve(sockets=[listener]), name=f"webhook :{self.port}"
        )
        while not self._server.started:
            if self._task.done():
                self._task.result()  # raises what stopped it
                raise RuntimeError(f"the webhook server on port {self.port} stopped while starting")
            await asyncio.sleep(0.01)
        log.info("webhook serving https://%s:%d%s", self._host, self.port, MUTATE_PATH)

    def reload(self) -> None:
        """Serve the certificate files as they are now to every new connection (open ones keep theirs).

        Runs on the loop's thread, so no handshake sees the context between certificate and key.
        """
        if self._context is None:
            raise RuntimeError("reload before start: the webhook server is not serving yet")
        self._context.load_cert_chain(self._cert_file, self._key_file)

    async def stop(self) -> None:
        """Stop accepting, let answers in flight finish (5 s at most) and close; safe before start."""
        if self._server is None or self._task is None:
            return
        self._server.should_exit = True
        try:
            await self._task
        finally:
            self._server = self._task = None
