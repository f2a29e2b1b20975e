"""The HTTP face of the fake cluster: kube-apiserver's REST routes on FastAPI, over ``Cluster``.

One catch-all route: the path is parsed by ``fakecluster.paths`` (a table-tested pure function),
discovery is answered from the resource table, and every failure becomes a ``Status`` body with
the HTTP status equal to its ``code``. Watches stream chunked JSON lines, flushed per event.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import Response, StreamingResponse

from fakecluster import discovery, errors, paths, selectors, watch_events
from fakecluster.cluster import Cluster
from fakecluster.errors import ApiError
from fakecluster.paths import Target

Admit = Callable[[str, Target, dict[str, Any]], Awaitable[dict[str, Any]]]
_FALSE = ("", "0", "false")
log = logging.getLogger("fakecluster")


@dataclass(frozen=True)
class ServeOptions:
    """What a deployment of kube-apiserver would configure: auth, and watch timing."""

    token: str | None = None  # when set, every request needs ``Authorization: Bearer <token>``
    watch_timeout_s: float = 1800.0  # a watch without timeoutSeconds ends after this (real: 30–60 min)
    bookmark_every_s: float = 60.0  # BOOKMARK period for watches that allow them (real: about a minute)


def _json(body: Any, code: int = 200) -> Response:
    return Response(json.dumps(body, separators=(",", ":")), code, media_type="application/json")


def _flag(request: Request, name: str) -> bool:
    return request.query_params.get(name, "").lower() not in _FALSE


async def _body(request: Request) -> Any:
    raw = await request.body()
    try:
        return json.loads(raw) if raw else None
    except ValueError as error:
        raise errors.bad_request(f"the request body is not JSON: {error}") from None


def _grace_period(query: str | None, body: Any) -> int | None:
    """DeleteOptions' ``gracePeriodSeconds``, from the body or the query (the client may send either)."""
    value = body if body is not None else query
    if value is None:
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        raise errors.bad_request(
            f"gracePeriodSeconds={value!r}: expected a whole number of seconds (0 deletes at once)"
        ) from None


def _discovery(path: str, host: str) -> dict[str, Any] | None:
    parts = [part for part in path.split("/") if part]
    if parts == ["version"]:
        return discovery.VERSION
    if parts == ["api"]:
        return discovery.core_versions(host)
    if parts == ["apis"]:
        return discovery.groups()
    if len(parts) == 2 and parts[0] == "api":
        return discovery.resources("", parts[1]) or {}
    if len(parts) == 2 and parts[0] == "apis":
        return discovery.group(parts[1]) or {}
    if len(parts) == 3 and parts[0] == "apis":
        return discovery.resources(parts[1], parts[2]) or {}
    return None


def create_app(cluster: Cluster, options: ServeOptions, admit: Admit) -> FastAPI:
    """The ASGI app serving ``cluster``; ``admit`` runs mutating admission on creates."""
    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)

    async def watch(request: Request, target: Target) -> Response:
        query = request.query_params
        matches = selectors.object_matcher(
            query.get("labelSelector", ""), query.get("fieldSelector", ""), target.resource
        )
        timeout = query.get("timeoutSeconds", "")
        if timeout and not timeout.isdigit():
            raise errors.bad_request(f"timeoutSeconds={timeout!r}: expected a whole number of seconds")
        timeout_s = float(timeout) if timeout else options.watch_timeout_s
        try:
            first, watcher = cluster.watch(
                target.resource,
                target.namespace,
                matches,
                query.get("resourceVersion", ""),
                asyncio.get_running_loop(),
            )
        except ApiError as error:
            if error.code != 410:
                raise
            return Response(
                watch_events.line(watch_events.error(error.status)), media_type="application/json"
            )
        bookmarks = _flag(request, "allowWatchBookmarks")
        if bookmarks and _flag(request, "sendInitialEvents"):
            end = watch_events.bookmark(target.resource, watcher.revision)
            end["object"]["metadata"]["annotations"] = {"k8s.io/initial-events-end": "true"}
            first.append(end)

        async def body() -> AsyncIterator[bytes]:
            try:
                async for chunk in watcher.stream(
                    first, timeout_s, options.bookmark_every_s if bookmarks else None
                ):
                    yield chunk
            finally:
                cluster.unwatch(watcher)

        return StreamingResponse(body(), media_type="application/json")

    async def resource_request(request: Request, target: Target) -> Response:
        method, query = request.method, request.query_params
        resource, namespace, name, sub = target.resource, target.namespace, target.name, target.subresource
        content_type = request.headers.get("content-type", "")
        if target.is_collection:
            verb = {
                "GET": "watch" if _flag(request, "watch") else "list",
                "POST": "create",
                "DELETE": "deletecollection",
            }.get(method)
        else:
            verb = {"GET": "get", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}.get(method)
        if verb is None:
            raise errors.method_not_allowed(method, request.url.path)
        failure = cluster.faults.take(verb, resource.plural + (f"/{sub}" if sub else ""), name or "")
        if failure is not None:
            raise failure
        if verb == "watch":
            return await watch(request, target)
        if verb in ("list", "deletecollection"):
            selection = (query.get("labelSelector", ""), query.get("fieldSelector", ""))
            operation = cluster.list_collection if verb == "list" else cluster.delete_collection
            return _json(operation(resource, namespace, *selection))
        if verb == "create":
            return _json(
                cluster.create(resource, namespace, await admit("CREATE", target, await _body(request))), 201
            )
        assert name is not None
        if verb == "delete":
            options_body = await _body(request) or {}
            grace = _grace_period(query.get("gracePeriodSeconds"), options_body.get("gracePeriodSeconds"))
            return _json(cluster.delete(resource, namespace, name, options_body.get("preconditions"), grace))
        if sub == "scale":
            if verb == "get":
                return _json(cluster.get_scale(namespace, name))
            if verb == "update":
                return _json(cluster.replace_scale(namespace, name, await _body(request)))
            return _json(cluster.patch_scale(namespace, name, content_type, await request.body()))
        if verb == "get":
            return _json(cluster.get(resource, namespace, name))
        if verb == "update":
            return _json(cluster.replace(resource, namespace, name, await _body(request), sub))
        return _json(cluster.patch(resource, namespace, name, content_type, await request.body(), sub))

    @app.api_route("/{path:path}", methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
    async def serve(request: Request, path: str) -> Response:
        try:
            if options.token and request.headers.get("authorization") != f"Bearer {options.token}":
                raise errors.unauthorized()
            if request.method == "GET" and path.strip("/") in ("healthz", "readyz", "livez"):
                return Response("ok", media_type="text/plain")
            if (
                request.method == "GET"
                and (document := _discovery(path, request.headers.get("host", ""))) is not None
            ):
                if not document:
                    raise errors.path_not_found(request.url.path)
                return _json(document)
            return await resource_request(request, paths.parse(request.url.path))
        except ApiError as error:
            return _json(error.status, error.code)
        except (
            Exception
        ) as error:  # a bug here or in a controller: a Status, as kube-apiserver answers a panic
            log.exception("fake API server: %s %s failed", request.method, request.url.path)
            failure = errors.internal(f"{type(error).__name__}: {error}")
            return _json(failure.status, failure.code)

    return app
