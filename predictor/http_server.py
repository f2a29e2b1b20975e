"""A lean HTTP/1.1 server for the predictor: an asyncio Protocol driving httptools, on uvloop.

Why not uvicorn: at batch 1 the demo CNN computes for ~2.5 ms, and the protocol's share of a request
should stay near a tenth of that; uvicorn's ASGI layer alone spent more than half of the event loop's
CPU per request here (message dicts, a task, default headers). This server does what an inference
endpoint needs and nothing else: keep-alive, pipelined requests answered in order, Content-Length and
chunked request bodies buffered whole (up to a limit), ``Expect: 100-continue``, an idle timeout, and
a graceful shutdown that lets requests in flight finish.

    server = HttpServer(handler, keep_alive_s=75, max_body_bytes=256 << 20)
    await server.start(sock)           # a bound, listening socket
    ...
    await server.shutdown(grace=30)

``handler(request) -> (status, body, headers)``, or an awaitable of it when the answer has to wait;
headers are ``(name, value)`` bytes pairs without Content-Length or Connection, which the server adds.
An answer given at once goes out without a task or a trip through the event loop's ready queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from http import HTTPStatus

import httptools
import orjson

log = logging.getLogger("predictor")

Response = tuple[int, bytes, list[tuple[bytes, bytes]]]
_REASONS = {status.value: status.phrase.encode() for status in HTTPStatus}
_PIPELINE_LIMIT = 16  # queued requests per connection before we stop reading from it
_SMALL_BODY = 64 << 10  # below this a response goes out in one write


@dataclass
class Request:
    method: str
    target: bytes  # raw request-target: path and query, still percent-encoded
    headers: dict[bytes, bytes] = field(default_factory=dict)  # lower-case names, first occurrence
    body: bytearray = field(default_factory=bytearray)
    keep_alive: bool = True


Handler = Callable[[Request], Response | Awaitable[Response]]


def render(status: int, body: bytes, headers: list[tuple[bytes, bytes]], keep_alive: bool) -> list[bytes]:
    """Wire bytes for a response: the head, then the body (kept separate when it is large)."""
    lines = [b"HTTP/1.1 %d %s\r\n" % (status, _REASONS.get(status, b"Unknown"))]
    lines.extend(b"%s: %s\r\n" % pair for pair in headers)
    lines.append(b"content-length: %d\r\n" % len(body))
    if not keep_alive:
        lines.append(b"connection: close\r\n")
    lines.append(b"\r\n")
    head = b"".join(lines)
    return [head + body] if len(body) < _SMALL_BODY else [head, body]


class HttpServer:
    def __init__(self, handler: Handler, keep_alive_s: float = 75.0, max_body_bytes: int = 256 << 20):
        self.handler = handler
        self.keep_alive_s = keep_alive_s
        self.max_body_bytes = max_body_bytes
        self.connections: set[_Connection] = set()
        self.in_progress = 0  # requests handed to the handler and not yet answered, on all connections
        self._server: asyncio.AbstractServer | None = None
        self.stopping = False

    async def start(self, sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _Connection(self, loop), sock=sock)

    async def shutdown(self, grace: float = 30.0) -> None:
        """Stop accepting; close idle connections; give requests in flight ``grace`` seconds to finish."""
        self.stopping = True
        if self._server is not None:
            self._server.close()
        for connection in list(self.connections):
            connection.close_when_idle()
        deadline = asyncio.get_running_loop().time() + grace
        while self.connections and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.05)
        for connection in list(self.connections):
            connection.abort()


def _last_resort(error: BaseException) -> Response:
    """The handler maps errors to responses itself; one that escapes it still gets an answer."""
    log.error("request handler failed", exc_info=error)
    return 500, orjson.dumps({"error": repr(error)}), [(b"content-type", b"application/json")]


class _Connection(asyncio.Protocol):
    def __init__(self, server: HttpServer, loop: asyncio.AbstractEventLoop):
        self.server = server
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.current: Request | None = None  # being parsed
        self.pending: deque[Request] = deque()  # parsed, waiting for their turn
        self.busy = False  # a request is being answered
        self.paused = False
        self.closed = False
        self.idle_timer: asyncio.TimerHandle | None = None
        self._url = bytearray()
        self._too_large = False

    # --- transport events ------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not an asyncio.Transport
        self.server.connections.add(self)
        self._arm_idle_timer()

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(400, "protocol upgrades are not supported")
        except httptools.HttpParserError as exc:
            self._fail(400, f"malformed HTTP request: {exc}")

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.server.connections.discard(self)
        if self.idle_timer is not None:
            self.idle_timer.cancel()

    # --- parser callbacks ------------------------------------------------------------------------

    def on_message_begin(self) -> None:
        self.current = Request("", b"")
        self._url.clear()
        self._too_large = False
        if self.idle_timer is not None:
            self.idle_timer.cancel()
            self.idle_timer = None

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        assert self.current is not None
        self.current.headers.setdefault(name.lower(), value)

    def on_headers_complete(self) -> None:
        request = self.current
        assert request is not None and self.transport is not None
        request.method = self.parser.get_method().decode("latin-1")
        request.target = bytes(self._url)
        length = request.headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.server.max_body_bytes:
            self._too_large = True
        elif request.headers.get(b"expect", b"").lower() == b"100-continue":
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body: bytes) -> None:
        assert self.current is not None
        if self._too_large or len(self.current.body) + len(body) > self.server.max_body_bytes:
            self._too_large = True
            return
        self.current.body += body

    def on_message_complete(self) -> None:
        request, self.current = self.current, None
        assert request is not None
        request.keep_alive = self.parser.should_keep_alive() and not self._too_large
        if self._too_large:
            self._fail(413, f"request body exceeds {self.server.max_body_bytes} bytes")
            return
        self.pending.append(request)
        if len(self.pending) >= _PIPELINE_LIMIT and not self.paused and self.transport is not None:
            self.transport.pause_reading()
            self.paused = True
        if not self.busy:
            self._next()

    # --- answering -------------------------------------------------------------------------------

    def _next(self) -> None:
        """Answer the queued requests in order: those answered at once in this loop (not by recursion,
        so a long pipeline cannot overflow the stack), until one has to wait for its task."""
        while self.pending and not self.closed and not self.busy:
            request = self.pending.popleft()
            if self.paused and len(self.pending) < _PIPELINE_LIMIT // 2 and self.transport is not None:
                self.transport.resume_reading()
                self.paused = False
            self.server.in_progress += 1
            try:
                outcome = self.server.handler(request)
            except Exception as error:
                outcome = _last_resort(error)
            if isinstance(outcome, tuple):
                if not self._respond(request, outcome):
                    return
                continue
            self.busy = True
            task = asyncio.ensure_future(outcome, loop=self.loop)
            task.add_done_callback(lambda done, request=request: self._answer(request, done))
            return
        if not self.busy and not self.pending and not self.closed:
            self._arm_idle_timer()

    def _answer(self, request: Request, done: asyncio.Future) -> None:
        self.busy = False
        if done.cancelled():
            self.server.in_progress -= 1
            self.abort()
            return
        error = done.exception()
        if self._respond(request, done.result() if error is None else _last_resort(error)):
            self._next()

    def _respond(self, request: Request, response: Response) -> bool:
        """Write one answer; False when the connection is done with (closed now or before)."""
        self.server.in_progress -= 1
        if self.closed or self.transport is None:
            return False
        status, body, headers = response
        keep_alive = request.keep_alive and not self.server.stopping
        self.transport.writelines(render(status, body, headers, keep_alive))
        if not keep_alive:
            self.transport.close()
            return False
        return True

    def _fail(self, status: int, message: str) -> None:
        if self.transport is None or self.closed:
            return
        body = orjson.dumps({"error": message})
        self.transport.writelines(render(status, body, [(b"content-type", b"application/json")], False))
        self.transport.close()
        self.closed = True

    def _arm_idle_timer(self) -> None:
        if self.idle_timer is not None:
            self.idle_timer.cancel()
        self.idle_timer = self.loop.call_later(self.server.keep_alive_s, self.close_when_idle)

    def close_when_idle(self) -> None:
        if not self.busy and not self.pending and self.current is None and self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None:
            with contextlib.suppress(Exception):
                self.transport.abort()
