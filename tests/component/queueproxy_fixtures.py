"""Real loopback servers for the queue-proxy's and the HTTP engine's component tests: a user
container, a queue-proxy in front of it, a forwarding server and a raw client.

The user container is a small HTTP server with endpoints whose timing and framing a test controls
(sleep, gate, stream, echo, die), and it counts how many requests it is serving at once, so a test can
check the breaker from the far side.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from typing import Any, TypeVar
from urllib.parse import parse_qs

import httpx

from httpengine.errors import UpstreamError
from httpengine.limits import Limits
from httpengine.request import Request
from httpengine.response import Response
from httpengine.server import HttpServer
from httpengine.upstream import UpstreamPool
from queueproxy.app import QueueProxy
from queueproxy.config import QueueProxyConfig, default_probe

T = TypeVar("T")


def run(coro_fn: Callable[[], Awaitable[T]], timeout: float = 15.0) -> T:
    """Run one async test body on uvloop with a hard time limit."""
    import uvloop

    async def bounded() -> T:
        return await asyncio.wait_for(coro_fn(), timeout)

    return uvloop.run(bounded())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class UserContainer:
    """The user container behind the queue-proxy; endpoints are chosen by path, knobs by query."""

    def __init__(self, port: int = 0) -> None:
        self.in_flight = 0
        self.max_in_flight = 0
        self.served = 0
        self.seen_headers: list[dict[str, str]] = []
        self.ready_status = 503  # what GET /ready answers (an HTTP readiness probe's target)
        self.gate = asyncio.Event()  # GET /gate answers once a test sets it
        self.server = HttpServer(self.handle, name="user-container")
        self.port = port  # where ``async with`` listens; 0: a free port

    async def start(self, port: int = 0) -> UserContainer:
        _, self.port = await self.server.start("127.0.0.1", port)
        return self

    async def stop(self) -> None:
        await self.server.shutdown(grace=0.0)

    async def __aenter__(self) -> UserContainer:
        """``async with UserContainer() as user``: listening, stopped on the way out however it ends."""
        return await self.start(self.port)

    async def __aexit__(self, *_: object) -> None:
        await self.stop()

    async def handle(self, request: Request, response: Response) -> None:
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            await self._route(request, response)
        finally:
            self.in_flight -= 1
            self.served += 1

    async def _route(self, request: Request, response: Response) -> None:
        query = {k: v[0] for k, v in parse_qs(request.query).items()}
        path = request.path
        self.seen_headers.append({k.decode(): v.decode() for k, v in request.headers})
        if path == "/sleep":
            await asyncio.sleep(float(query.get("s", "0.1")))
            response.send(200, b"slept")
        elif path == "/gate":  # held until the test lets it go: in flight as long as the test needs
            await self.gate.wait()
            response.send(200, b"released")
        elif path == "/headers":
            response.send(200, json.dumps(self.seen_headers[-1]).encode(), content_type=b"application/json")
        elif path == "/echo":  # streams the body back chunk by chunk, as it arrives
            response.start(200, [(b"content-type", b"application/octet-stream")])
            response.flush()
            while chunk := await request.body.read():
                response.write(chunk)
                await response.drain()
            response.end()
        elif path == "/count":  # reads the body without keeping it and answers its size
            total = 0
            while chunk := await request.body.read():
                total += len(chunk)
            response.send(200, str(total).encode())
        elif path == "/stream":  # a chunked response in parts with gaps between them
            response.start(200, [(b"content-type", b"text/plain")])
            for i in range(int(query.get("n", "3"))):
                if i:
                    await asyncio.sleep(float(query.get("gap", "0.05")))
                response.write(b"part%d\n" % i)
            response.end()
        elif path == "/ready":
            response.send(self.ready_status, b"")
        elif path == "/die":
            response.abort()
        else:
            response.send(200, b"ok")


async def start_queue_proxy(user_port: int, **changes: Any) -> tuple[QueueProxy, dict[str, int]]:
    """An in-process queue-proxy on free ports in front of ``user_port``."""
    config = QueueProxyConfig(
        serving_port=0,
        admin_port=0,
        stats_port=0,
        metrics_port=0,
        user_port=user_port,
        pod_name="test-pod",
        probes=(default_probe("127.0.0.1", user_port),),
    )
    proxy = QueueProxy(replace(config, **changes))
    ports = await proxy.start()
    return proxy, ports


@contextlib.asynccontextmanager
async def running_queue_proxy(
    user_port: int, **changes: Any
) -> AsyncIterator[tuple[QueueProxy, dict[str, int]]]:
    """:func:`start_queue_proxy`, its servers closed on the way out however the test ends."""
    proxy, ports = await start_queue_proxy(user_port, **changes)
    try:
        yield proxy, ports
    finally:
        await proxy._close_servers(0.0)  # what its SIGTERM path ends with, without the drain


async def wait_ready(proxy: QueueProxy, timeout: float = 5.0) -> None:
    await asyncio.wait_for(proxy.readiness.wait_ready(), timeout)


def client_for(port: int) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{port}", timeout=10.0, limits=httpx.Limits(max_connections=500)
    )


Stack = tuple[UserContainer, QueueProxy, dict[str, int], httpx.AsyncClient]


@contextlib.asynccontextmanager
async def stack(**changes: Any) -> AsyncIterator[Stack]:
    """A ready queue-proxy in front of a user container, and a client; all stopped however the test ends."""
    async with (
        UserContainer() as user,
        running_queue_proxy(user.port, **changes) as (proxy, ports),
        client_for(ports["serving_port"]) as client,
    ):
        await wait_ready(proxy)
        yield user, proxy, ports, client


@contextlib.asynccontextmanager
async def forwarding(user_port: int) -> AsyncIterator[tuple[int, UpstreamPool]]:
    """A server forwarding every request to ``user_port`` through a pool: its port and the pool, both
    closed on the way out however the test ends."""
    pool = UpstreamPool("127.0.0.1", user_port)

    async def forward(request: Request, response: Response) -> None:
        try:
            await pool.forward(request, response)
        except UpstreamError as exc:
            if not response.started:
                response.send(502, str(exc).encode())
            else:
                response.abort()

    server = HttpServer(forward, name="forwarder", limits=Limits(max_head_bytes=8192))
    try:
        _, port = await server.start("127.0.0.1", 0)
        yield port, pool
    finally:
        await server.shutdown(0)
        pool.close()


async def raw_exchange(port: int, data: bytes, *, read_timeout: float = 2.0) -> bytes:
    """Send raw bytes, read until the server closes (or ``read_timeout`` passes quietly)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    await writer.drain()
    received = b""
    try:
        while True:
            chunk = await asyncio.wait_for(reader.read(65536), read_timeout)
            if not chunk:
                break
            received += chunk
    except TimeoutError:
        pass
    finally:
        writer.close()
    return received
