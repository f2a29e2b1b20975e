"""The InferenceGraph router's server: reads a request, runs the graph from ``root``, answers.

Like KServe's router: any POST (any path) runs the graph; each service step is a POST of JSON to its
target, carrying the client's headers that match a propagation pattern (KServe's ``PROPAGATE_HEADERS``:
regular expressions matched against header names; Content-Type defaults to application/json); the
client gets the graph's status and body, with ``Content-Type: application/json`` when the body is
JSON. Step answers' own headers are not passed on (KServe's router does not either). Errors are
KServe's shape, ``{"error": "Failed to process request", "cause": "..."}``.

Bounded: the request body (413 past ``max_body_bytes``), each step's answer (502 past the same
bound), step calls in flight across all requests (``max_concurrent_steps``; more wait their turn),
each step call (``spec.routerTimeouts.serviceClient``) and the whole graph (``spec.timeout``, else
``DEFAULT_TIMEOUT``: 504). Connections: one keep-alive pool per target address, at most
``max_concurrent_steps`` open at once. ``GET /metrics`` (``kpa_graph_*``) and ``GET /readyz``
(KServe's readiness path; ``/healthz`` too) are answered, not routed.
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
from collections.abc import Awaitable, Callable, Sequence

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from graph.executor import Answer, Executor, StepFailed
from graph.routing import SPLIT_RANGE, error_body, is_json
from graph.spec import ROOT, Graph, Step
from graph.targets import DEFAULT_SERVICE_URL, Target, resolve_all
from httpengine.errors import UpstreamConnectError, UpstreamError
from httpengine.request import Request
from httpengine.response import BufferedResponse, Response
from httpengine.upstream import UpstreamPool

log = logging.getLogger("kpa.graph")

DEFAULT_TIMEOUT = 300.0  # Knative's revision timeout: the graph's bound when spec.timeout is not set
DEFAULT_MAX_BODY_BYTES = 16 * 1024 * 1024
DEFAULT_MAX_CONCURRENT_STEPS = 256
JSON = b"application/json"
_HOP = frozenset({"host", "content-length", "transfer-encoding", "connection", "keep-alive", "te", "upgrade"})


class _BoundedBody(BufferedResponse):
    """A step's answer kept whole up to ``limit`` bytes; past it the rest is dropped and ``over`` set."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit
        self.size = 0
        self.over = False

    def write(self, data: bytes) -> None:
        self.size += len(data)
        if self.size > self.limit:
            self.over = True
        elif data:
            super().write(data)

    def end(self, data: bytes = b"") -> None:
        self.write(data)
        self.finished = True


class GraphMetrics:
    """``kpa_graph_requests_total{node,code}`` and ``kpa_graph_node_seconds{node}``, one pair per node run."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.requests = Counter(
            "kpa_graph_requests", "Node runs by answer status.", ("node", "code"), registry=self.registry
        )
        self.seconds = Histogram(
            "kpa_graph_node_seconds", "Time a node took to answer.", ("node",), registry=self.registry
        )

    def observe(self, node: str, status: int, seconds: float) -> None:
        self.requests.labels(node, str(status)).inc()
        self.seconds.labels(node).observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class GraphRouter:
    """The HTTP handler; ``close()`` drops the pooled step connections."""

    def __init__(
        self,
        graph: Graph,
        *,
        entry: str | None = None,
        service_url: str = DEFAULT_SERVICE_URL,
        propagate: Sequence[str] = (),
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        max_concurrent_steps: int = DEFAULT_MAX_CONCURRENT_STEPS,
        draw: Callable[[], int] = lambda: random.randrange(SPLIT_RANGE),
    ) -> None:
        """``entry``: kpa up's entry URL (serviceName steps go there with ``Host: <name>``); else
        ``service_url`` with ``{name}``. ``propagate``: regular expressions of header names to pass on.
        Raises TargetError or re.error for an unusable option."""
        self.graph = graph
        self.targets = resolve_all(graph, entry, service_url)
        self.patterns = [re.compile(p, re.IGNORECASE) for p in propagate if p]
        self.max_body_bytes = max_body_bytes
        self.timeout = graph.timeout or DEFAULT_TIMEOUT
        self.slots = asyncio.Semaphore(max_concurrent_steps)
        self.pools: dict[tuple[str, int], UpstreamPool] = {}
        self.metrics = GraphMetrics()
        self.draw = draw

    def close(self) -> None:
        for pool in self.pools.values():
            pool.close()

    def __call__(self, request: Request, response: Response) -> Awaitable[None] | None:
        if request.method == b"GET" and request.path == "/metrics":
            response.send(
                200, self.metrics.render(), content_type=b"text/plain; version=0.0.4; charset=utf-8"
            )
            return None
        if request.method == b"GET" and request.path in ("/readyz", "/healthz"):
            response.send(200, b"ok\n")
            return None
        return self._route(request, response)

    async def _route(self, request: Request, response: Response) -> None:
        try:
            body = await request.body.read_all(self.max_body_bytes)
        except ValueError:
            response.send(413, error_body(f"the request body is larger than {self.max_body_bytes} bytes"),
                          content_type=JSON)  # fmt: skip
            return
        headers = self._propagated(request.headers)
        executor = Executor(self.graph, lambda step, data: self._call(step, data, headers), self.draw,
                            self.metrics.observe)  # fmt: skip
        try:
            async with asyncio.timeout(self.timeout):
                answer = await executor.run(ROOT, body)
        except TimeoutError:
            cause = f"the graph did not answer within {self.timeout:g} s (spec.timeout)"
            answer = Answer(504, error_body(cause))
        except StepFailed as failed:
            answer = Answer(failed.status, error_body(failed.cause))
        kind = JSON if is_json(answer.body) else b"text/plain; charset=utf-8"
        response.send(answer.status, answer.body, content_type=kind)

    def _propagated(self, headers: Sequence[tuple[bytes, bytes]]) -> tuple[tuple[bytes, bytes], ...]:
        chosen = [
            (name, value)
            for name, value in headers
            if name.decode("latin-1") not in _HOP
            and any(p.fullmatch(name.decode("latin-1")) for p in self.patterns)
        ]
        if not any(name == b"content-type" for name, _ in chosen):
            chosen.append((b"content-type", JSON))
        return tuple(chosen)

    def _pool(self, target: Target) -> UpstreamPool:
        key = (target.host, target.port)
        if key not in self.pools:
            self.pools[key] = UpstreamPool(target.host, target.port, max_idle=64, forwarded_for=False)
        return self.pools[key]

    async def _call(self, step: Step, body: bytes, headers: tuple[tuple[bytes, bytes], ...]) -> Answer:
        target = self.targets[step.path]
        pool = self._pool(target)
        sink = _BoundedBody(self.max_body_bytes)
        prepared = pool.prepare(b"POST", target.path, headers, body, host=target.host_header)
        where = f"step {step.key!r} ({step.path}) calling {target.url}"
        async with self.slots:
            try:
                async with asyncio.timeout(self.graph.step_timeout):
                    status = await pool.send(prepared, sink)
            except TimeoutError:
                raise StepFailed(504, f"{where}: no answer within {self.graph.step_timeout:g} s "
                                 "(spec.routerTimeouts.serviceClient)") from None  # fmt: skip
            except (UpstreamConnectError, UpstreamError) as exc:
                raise StepFailed(502, f"{where}: {exc}") from None
        if sink.over:
            raise StepFailed(502, f"{where}: the answer is larger than {self.max_body_bytes} bytes")
        return Answer(status, sink.body)
