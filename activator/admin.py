"""The activator's control API: JSON over HTTP on the admin port, for an autoscaler or a controller.

Small on purpose — everything an autoscaler needs to drive the activator and nothing else:

    GET    /healthz                               200 "ok"
    GET    /metrics                               Prometheus text
    GET    /revisions                             {"revisions": [status, ...]}
    GET    /revisions/{namespace}/{name}          status
    PUT    /revisions/{namespace}/{name}          config fields -> status (creates or updates)
    DELETE /revisions/{namespace}/{name}          {"removed": "ns/name"}; held requests get 503
    PUT    /revisions/{namespace}/{name}/endpoints  {"addresses": ["host:port", ...]} -> status
    GET    /revisions/{namespace}/{name}/auth     the revision's data-path authentication ({} if none)
    PUT    /revisions/{namespace}/{name}/auth     {"bearer_tokens_file", "jwks_url", "jwt_issuer",
                                                  "jwt_audience"} -> the same; DELETE turns it off
    GET    /activators, PUT /activators           {"index": i, "count": n}

Every call but a GET (or HEAD) changes what the activator does — where a revision's requests go,
whether they need credentials — so it needs ``Authorization: Bearer <admin token>``: 401 with
``WWW-Authenticate: Bearer`` without one, 403 with a wrong one, 403 for every such call when the
process has no admin token at all. Errors are JSON ``{"error": "..."}`` with 400 (bad input, naming
the field), 404 (unknown revision or path) or 405. The full contract is in docs/activator.md.
"""

from __future__ import annotations

import json
from typing import Any

from activator.config import ActivatorConfigError, RevisionConfig
from activator.server import Activator
from autoscaler.stat import RevisionKey
from httpengine.request import Request
from httpengine.response import Response
from queueproxy.auth import AuthConfigError, AuthSpec, TokenSet, check_admin
from queueproxy.gate import AuthGate

MAX_BODY = 1 << 20
_JSON = b"application/json"
_READ_ONLY = (b"GET", b"HEAD")
REALM = "kpa-activator-admin"


class _HttpError(Exception):
    def __init__(
        self, status: int, message: str, allow: bytes | None = None, challenge: bytes | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.allow = allow
        self.challenge = challenge


class AdminApi:
    """The control API of one activator; ``admin_token`` None refuses every state-changing call."""

    def __init__(self, activator: Activator, admin_token: str | None = None) -> None:
        self.activator = activator
        self._tokens = TokenSet([admin_token]) if admin_token else None

    async def handle(self, request: Request, response: Response) -> None:
        try:
            status, document = await self._route(request)
        except _HttpError as exc:
            headers = [(b"allow", exc.allow)] if exc.allow else []
            if exc.challenge:
                headers.append((b"www-authenticate", exc.challenge))
            response.send(exc.status, _encode({"error": str(exc)}), headers, _JSON)
            return
        if isinstance(document, bytes):  # the Prometheus text of /metrics
            response.send(status, document, content_type=b"text/plain; version=0.0.4; charset=utf-8")
        else:
            response.send(status, _encode(document), content_type=_JSON)

    async def _route(self, request: Request) -> tuple[int, Any]:
        method = request.method
        if method not in _READ_ONLY:
            denial = check_admin(request.header(b"authorization"), self._tokens)
            if denial is not None:
                raise _HttpError(denial.status, denial.reason, challenge=denial.challenge(REALM))
        parts = [p for p in request.path.split("/") if p]
        activator = self.activator
        if parts == ["healthz"]:
            _allow(method, b"GET")
            return 200, {"status": "ok"}
        if parts == ["metrics"]:
            _allow(method, b"GET")
            return 200, await activator.metrics_text()
        if parts == ["activators"]:
            _allow(method, b"GET", b"PUT")
            if method == b"PUT":
                doc = await _read_json(request)
                if not isinstance(doc, dict) or set(doc) != {"index", "count"}:
                    raise _HttpError(400, 'activators body must be {"index": <int>, "count": <int>}')
                index, count = doc["index"], doc["count"]
                if not all(isinstance(v, int) and not isinstance(v, bool) for v in (index, count)):
                    raise _HttpError(400, f"activators index={index!r} count={count!r}: must be integers")
                _config_call(activator.set_activator_slot, index, count)
            index, count = activator.activator_slot
            return 200, {"index": index, "count": count}
        if parts == ["revisions"]:
            _allow(method, b"GET")
            return 200, {"revisions": [activator.revision_status(key) for key in activator.revisions()]}
        if len(parts) in (3, 4) and parts[0] == "revisions" and (len(parts) == 3 or parts[3] in _SUBPATHS):
            key = RevisionKey(parts[1], parts[2])
            if len(parts) == 4 and parts[3] == "auth":
                return 200, await self._auth(request, key)
            if len(parts) == 4:
                _allow(method, b"PUT")
                return 200, await self._put_endpoints(request, key)
            _allow(method, b"GET", b"PUT", b"DELETE")
            if method == b"PUT":
                return 200, await self._put_revision(request, key)
            _known(activator, key)
            if method == b"DELETE":
                activator.remove_revision(key)
                activator.auth_gates.pop(key, None)
                return 200, {"removed": str(key)}
            return 200, activator.revision_status(key)
        raise _HttpError(404, f"no such admin path {request.path!r}; see docs/activator.md")

    async def _put_revision(self, request: Request, key: RevisionKey) -> dict[str, Any]:
        doc = await _read_json(request)
        if not isinstance(doc, dict):
            raise _HttpError(400, "revision config must be a JSON object")
        if doc.setdefault("namespace", key.namespace) != key.namespace:
            message = f"namespace={doc['namespace']!r} does not match the path's {key.namespace!r}"
            raise _HttpError(400, message)
        config = _config_call(RevisionConfig.from_json, doc, name=key.name)
        self.activator.set_revision(config)
        return self.activator.revision_status(key)

    async def _auth(self, request: Request, key: RevisionKey) -> dict[str, Any]:
        _allow(request.method, b"GET", b"PUT", b"DELETE")
        _known(self.activator, key)
        gates = self.activator.auth_gates
        if request.method == b"PUT":
            try:
                spec = AuthSpec.from_json(await _read_json(request), "auth body")
                gate = AuthGate.load(key.name, spec)
            except AuthConfigError as exc:
                raise _HttpError(400, str(exc)) from None
            gate.prefetch()
            gates[key] = gate
        elif request.method == b"DELETE":
            gates.pop(key, None)
        current = gates.get(key)
        return current.spec.to_json() if current is not None else {}

    async def _put_endpoints(self, request: Request, key: RevisionKey) -> dict[str, Any]:
        _known(self.activator, key)
        doc = await _read_json(request)
        if not isinstance(doc, dict) or set(doc) != {"addresses"} or not isinstance(doc["addresses"], list):
            raise _HttpError(400, 'endpoints body must be {"addresses": ["host:port", ...]}')
        _config_call(self.activator.set_endpoints, key, doc["addresses"])
        return self.activator.revision_status(key)


_SUBPATHS = ("endpoints", "auth")


def _allow(method: bytes, *allowed: bytes) -> None:
    if method not in allowed:
        listed = b", ".join(allowed)
        raise _HttpError(405, f"method {method.decode()} not allowed here; use {listed.decode()}", listed)


def _known(activator: Activator, key: RevisionKey) -> None:
    if key not in activator.revisions():
        known = ", ".join(str(k) for k in activator.revisions()) or "(none)"
        raise _HttpError(404, f"unknown revision {key}; known revisions: {known}")


def _config_call(function: Any, *args: Any, **kwargs: Any) -> Any:
    try:
        return function(*args, **kwargs)
    except ActivatorConfigError as exc:
        raise _HttpError(400, str(exc)) from None


async def _read_json(request: Request) -> Any:
    try:
        raw = await request.body.read_all(MAX_BODY)
    except ValueError as exc:
        raise _HttpError(413, str(exc)) from None
    try:
        return json.loads(raw or b"null")
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise _HttpError(400, f"request body is not JSON: {exc}") from None


def _encode(document: Any) -> bytes:
    return json.dumps(document, indent=1).encode() + b"\n"
