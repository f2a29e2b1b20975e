"""Helpers for the InferenceGraph router's component tests: small real step apps on loopback, and the
router itself (``GraphRouter`` on an ``HttpServer``) in the test's event loop.

A step app answers by path, recording every request it gets (path, headers, body):

* ``/label/<x>`` -> ``{"predictions": ["<x>"]}`` (a cat/dog classifier's answer)
* ``/tag/<x>`` -> ``{"from": "<x>", "input": <the request body as JSON>}``
* ``/fail/<status>`` -> that status with ``{"error": "boom"}``
* ``/slow/<seconds>`` -> waits, then ``{"slow": true}``
Every answer carries ``X-Step: yes`` (which the router must not pass on).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx

from graph.router import GraphRouter
from graph.spec import parse_graph
from httpengine.request import Request
from httpengine.response import Response
from httpengine.server import HttpServer


@dataclass
class Seen:
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class StepApp:
    seen: list[Seen] = field(default_factory=list)
    port: int = 0

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def paths(self) -> list[str]:
        return [s.path for s in self.seen]

    async def __call__(self, request: Request, response: Response) -> None:
        body = await request.body.read_all(1 << 20)
        headers = {k.decode(): v.decode() for k, v in request.headers}
        self.seen.append(Seen(request.path, headers, body))
        kind, _, arg = request.path.strip("/").partition("/")
        status, answer = 200, {"path": request.path}
        if kind == "label":
            answer = {"predictions": [arg]}
        elif kind == "tag":
            answer = {"from": arg, "input": json.loads(body) if body else None}
        elif kind == "fail":
            status, answer = int(arg), {"error": "boom"}
        elif kind == "slow":
            await asyncio.sleep(float(arg))
            answer = {"slow": True}
        response.send(status, json.dumps(answer).encode(), [(b"x-step", b"yes")], b"application/json")


@contextlib.asynccontextmanager
async def step_app() -> AsyncIterator[StepApp]:
    app = StepApp()
    server = HttpServer(app, name="step-app")
    _, app.port = await server.start("127.0.0.1", 0)
    try:
        yield app
    finally:
        await server.shutdown(0.0)


def graph_doc(nodes: dict[str, Any], **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "serving.kserve.io/v1alpha1", "kind": "InferenceGraph",
            "metadata": {"name": "test-graph"}, "spec": {"nodes": nodes, **spec}}  # fmt: skip


def one_node(router_type: str, steps: list[dict[str, Any]], **spec: Any) -> dict[str, Any]:
    """A graph of one node, ``root``."""
    return graph_doc({"root": {"routerType": router_type, "steps": steps}}, **spec)


@dataclass
class RunningRouter:
    router: GraphRouter
    url: str
    client: httpx.AsyncClient

    async def post(self, body: Any = None, headers: dict[str, str] | None = None) -> httpx.Response:
        content = json.dumps(body if body is not None else {"instances": [[1.0]]}).encode()
        return await self.client.post(self.url + "/", content=content, headers=headers or {})


@contextlib.asynccontextmanager
async def running_router(doc: dict[str, Any], **options: Any) -> AsyncIterator[RunningRouter]:
    router = GraphRouter(parse_graph(doc, "test-graph.yaml"), **options)
    server = HttpServer(router, name="graph")
    _, port = await server.start("127.0.0.1", 0)
    client = httpx.AsyncClient(timeout=30.0, limits=httpx.Limits(max_connections=32))
    try:
        yield RunningRouter(router, f"http://127.0.0.1:{port}", client)
    finally:
        await client.aclose()
        await server.shutdown(0.0)
        router.close()
