"""Each kind of HTTP server we run, started in-process on a uvloop loop of its own thread, so a test can
talk to any of them with plain blocking sockets: the engine alone (what the queue-proxy's four ports,
the activator and ``kpa up`` serve on), the queue-proxy in front of a user container, the predictor
(``predictor.server.serve`` on an empty model repository) and the sample app."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import uvloop

from httpengine.limits import Limits
from httpengine.request import Request
from httpengine.response import Response
from httpengine.server import HttpServer

T = TypeVar("T")
Stop = Callable[[], Awaitable[None]]


class ServerThread:
    """A uvloop event loop on a daemon thread; ``call`` runs a coroutine there and returns its result."""

    def __init__(self) -> None:
        self.loop = uvloop.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


async def start_engine(limits: Limits) -> tuple[int, Stop]:
    """The bare engine with a handler that reads the whole body, then answers 200 with its size."""

    async def handler(request: Request, response: Response) -> None:
        body = await request.body.read_all(limits.max_body_bytes)
        response.send(200, b"ok %d" % len(body))

    server = HttpServer(handler, limits=limits, name="engine")
    _, port = await server.start("127.0.0.1", 0)
    return port, lambda: server.shutdown(0)


async def start_queue_proxy(limits: Limits) -> tuple[int, Stop]:
    """The queue-proxy (its own default limits) in front of a user container that answers "ok"."""
    from queueproxy_fixtures import UserContainer, running_queue_proxy

    async with contextlib.AsyncExitStack() as started:  # a failed start stops what did start
        user = await started.enter_async_context(UserContainer())
        _, ports = await started.enter_async_context(running_queue_proxy(user.port))
        return ports["serving_port"], started.pop_all().aclose


async def start_predictor(limits: Limits, repository: Path) -> tuple[int, Stop]:
    from predictor.server import ServerOptions, serve

    listening: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    def on_event(event: dict) -> None:
        if event["event"] == "listening" and not listening.done():
            listening.set_result(event["port"])

    stop = asyncio.Event()
    options = ServerOptions(repository, repository / ".cache", limits=limits, grace_s=1.0)
    task = asyncio.get_running_loop().create_task(serve(options, on_event, stop))
    done, _ = await asyncio.wait([listening, task], return_when=asyncio.FIRST_COMPLETED)
    if task in done:
        task.result()  # it failed to start: raise why

    async def stopper() -> None:
        stop.set()
        await task

    return listening.result(), stopper


async def start_sample_app(limits: Limits) -> tuple[int, Stop]:
    from kpa.sample_app import start

    server = await start(0, lambda: 0.0, "sample-app", limits)
    return server.port, lambda: server.shutdown(0)


# -- blocking clients ------------------------------------------------------------------------------


def connect(port: int, timeout: float = 5.0) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=timeout)


def read_until_closed(sock: socket.socket, deadline_s: float = 5.0) -> bytes:
    """Everything the server sends until it closes the connection (or ``deadline_s`` passes)."""
    data = b""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            break
        except ConnectionResetError:
            break
        if not chunk:
            break
        data += chunk
    return data


_leftovers: dict[int, bytes] = {}  # bytes read past a response, per socket (pipelined answers)


def read_response(sock: socket.socket) -> tuple[int, bytes]:
    """One response with a Content-Length: (status, body); what follows it is kept for the next call."""
    data = _leftovers.pop(sock.fileno(), b"")
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed after {data!r}")
        data += chunk
    head, rest = data.split(b"\r\n\r\n", 1)
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(rest) < length:
        rest += sock.recv(65536)
    if len(rest) > length:
        _leftovers[sock.fileno()] = rest[length:]
    return int(head.split()[1]), rest[:length]


def get_ok(port: int) -> tuple[int, bytes]:
    """A plain ``GET /`` on a new connection."""
    with connect(port) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        return read_response(sock)
