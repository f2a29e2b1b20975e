"""One client connection of an ``HttpServer``: parse requests with httptools, run them one at a time.

It owns everything per connection: the parser callbacks, pipelining (a pipelined request waits for the
response before it), the body's backpressure and ``Expect: 100-continue``, the limits and timeouts of
``Limits`` with their refusals (each one answered, then a lingering close), and the flow control a
proxy links to (``link_flow``). What it needs from its server is ``Listener``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Protocol

import httptools

from httpengine.errors import ClientDisconnected, RequestRefused
from httpengine.flow import FlowControlled
from httpengine.limits import Limits
from httpengine.request import EMPTY_BODY, Headers, Request, RequestBody, announced_body, drainable
from httpengine.response import Response, plain_answer

log = logging.getLogger(__name__)

Handler = Callable[[Request, Response], "Awaitable[None] | None"]
LINGER_S = 2.0  # how long a refused connection may still send before it is cut off
_UPGRADE_WITH_BODY = "a protocol upgrade request with a body is not supported here; send it without Upgrade"


class Listener(Protocol):
    """What a connection needs from the server that accepted it (``HttpServer``)."""

    handler: Handler
    limits: Limits

    def admit(self, conn: ServerConnection) -> str | None:
        """Count ``conn`` as served; or, at the connection cap, the message of its 503."""

    def forget(self, conn: ServerConnection) -> None:
        """``conn`` closed."""

    def may_linger(self) -> bool:
        """Whether one more refused connection may linger (``linger_began``), or must close at once."""

    def linger_began(self) -> None: ...

    def linger_ended(self) -> None: ...


class ServerConnection(FlowControlled):
    """One client connection; parses requests and runs them one at a time."""

    __slots__ = (
        "_body", "_body_mark", "_body_mark_at", "_body_paused", "_current", "_discard", "_draining", "_fresh",
        "_head_size", "_head_started", "_headers", "_idle_since", "_in_head", "_linger_timer", "_lingering",
        "_loop", "_pipeline", "_pipeline_paused", "_read_size", "_rejection", "_starting", "_task", "_url",
        "client", "http11", "limits", "parser", "server", "transport",
    )  # fmt: skip
    # Set by connection_made, which asyncio calls before any other method.
    transport: asyncio.Transport
    _loop: asyncio.AbstractEventLoop

    def __init__(self, server: Listener) -> None:
        super().__init__()
        self.server = server
        self.limits = server.limits
        self.parser = httptools.HttpRequestParser(self)
        self.client = ""
        self.http11 = True
        self._url = b""
        self._headers: Headers = []
        self._head_size = 0  # bytes of earlier reads that ended inside the current request head
        self._read_size = 0
        self._in_head = False
        self._head_started = 0.0
        self._body: RequestBody = EMPTY_BODY  # body of the request being parsed
        self._current: Response | None = None
        self._starting: Request | None = None  # parsed, to be run when the current read is parsed
        self._task: asyncio.Task | None = None
        self._pipeline: deque[Request] = deque()
        self._pipeline_paused = False
        self._body_paused = False
        self._idle_since = time.monotonic()
        self._fresh = True  # no request has begun yet: the head timeout runs from the accept
        self._body_mark = -1  # body bytes received when the body timeout last saw them move, and when
        self._body_mark_at = 0.0
        self._rejection: bytes | None = None  # an answer to send once the response in flight is done
        self._lingering = False
        self._linger_timer: asyncio.TimerHandle | None = None
        self._discard = False  # drop what the client sends (lingering after a refusal, or upgraded)
        self._draining = False  # the answered request's unread body is being read and dropped

    # -- asyncio.Protocol ------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # typeshed gives every protocol a BaseTransport; a stream server's is always a Transport.
        self.transport = transport  # type: ignore[assignment]
        self._loop = asyncio.get_running_loop()
        refusal = self.server.admit(self)
        if refusal is not None:
            self._answer_and_close(503, refusal, b"retry-after: 1\r\n")
            return
        peer = transport.get_extra_info("peername")
        self.client = peer[0] if isinstance(peer, tuple) else ""

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.server.forget(self)
        if self._lingering:
            self._lingering = False
            self.server.linger_ended()
            if self._linger_timer is not None:
                self._linger_timer.cancel()
        gone = ClientDisconnected("client closed the connection")
        self._body.fail(gone)
        for queued in self._pipeline:
            queued.body.fail(gone)
        self._pipeline.clear()
        current = self._current
        if current is not None and not current.finished and current.on_abort is not None:
            current.on_abort()
        if self._task is not None and not self._task.done():
            self._task.cancel()
        self._wake_drain()
        self._relink_flow(None)

    def eof_received(self) -> bool:
        # Like Go's server and nginx: a client that stops sending has given up on its request, and
        # a proxy should stop working (and stop holding a breaker slot) for it. Closing runs
        # connection_lost, which cancels the handler.
        return False

    def data_received(self, data: bytes) -> None:
        if self._discard:
            return  # refused and answered, or upgraded: what the client still sends is dropped
        self._read_size = len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._upgrade()
        except RequestRefused as exc:
            self._refuse(exc)
        except httptools.HttpParserCallbackError as exc:
            cause = exc.__context__
            if isinstance(cause, RequestRefused):
                self._refuse(cause)
            else:
                log.exception("request parser callback failed")
                self._reject(400, "bad request")
        except httptools.HttpParserError as exc:
            self._refuse(RequestRefused(400, f"malformed HTTP request: {exc}"))
        else:
            request = self._starting
            if request is not None:
                self._starting = None
                self._run(request)
            if self._in_head:  # the read ended inside a request head
                if not self._head_size:
                    self._head_started = time.monotonic()  # it began in this read: its timeout starts now
                self._head_size += len(data)
                if self._head_size > self.limits.max_head_bytes:
                    self._reject(431, f"request head larger than {self.limits.max_head_bytes} bytes")

    def _refuse(self, exc: RequestRefused) -> None:
        body = self._body
        if body is not EMPTY_BODY and not body.complete and not self._pipeline:
            # The body of the request running (or about to run) broke a limit or turned malformed: its
            # handler would wait for bytes that will never be parsed.
            self._cut_off(exc.status, str(exc))
        else:
            self._reject(exc.status, str(exc))

    def _upgrade(self) -> None:
        """No protocol switching here. llhttp ends an upgrade request (or CONNECT) at its head and
        leaves what follows to the new protocol: a request without a body is served as a plain one and
        the connection closes after it; one with a body could never be read, so it is refused."""
        self._discard = True  # what follows the head is not HTTP; reading goes on, so EOF is seen
        request = self._starting or (self._pipeline[-1] if self._pipeline else None)
        if request is not None:
            request.keep_alive = False
            if request.body.chunked or request.body.content_length:
                if request is self._starting:
                    self._starting = None
                else:
                    self._pipeline.pop()
                self._reject(400, _UPGRADE_WITH_BODY)
                return
        self._start_parsed()

    # -- httptools callbacks ---------------------------------------------------------------
    def on_message_begin(self) -> None:
        self._url = b""
        self._headers = []
        self._head_size = 0  # also says that the head began in the read being parsed (see data_received)
        self._in_head = True
        self._fresh = False

    def on_url(self, url: bytes) -> None:
        self._url += url
        if len(self._url) > self.limits.max_url_bytes:
            raise RequestRefused(414, f"request target longer than {self.limits.max_url_bytes} bytes")

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        self._in_head = False
        headers = self._headers
        limits = self.limits
        if len(headers) > limits.max_headers:
            raise RequestRefused(431, f"more than {limits.max_headers} request headers")
        if self._head_size + self._read_size > limits.max_head_bytes:  # only then count exactly
            size = len(self._url) + sum(len(n) + len(v) + 4 for n, v in headers)
            if size > limits.max_head_bytes:
                raise RequestRefused(431, f"request head larger than {limits.max_head_bytes} bytes")
        parser = self.parser
        version = parser.get_http_version()
        self.http11 = version != "1.0"
        index = dict(reversed(headers))
        body = announced_body(index, self.http11, self)
        self._body = body
        request = Request(
            parser.get_method(),
            self._url,
            headers,
            version,
            parser.should_keep_alive(),
            self.client,
            body,
            index,
        )
        if self._current is None and self._starting is None and not self._pipeline:
            self._starting = request  # started once this read is parsed: a small body is then complete
        else:
            self._pipeline.append(request)
            if not self._pipeline_paused:
                self._pipeline_paused = True
                self.transport.pause_reading()

    def on_body(self, chunk: bytes) -> None:
        if self._draining:  # dropped; the parser counts its length, the body timeout its pace
            self._idle_since = time.monotonic()
        else:
            self._body.feed(chunk)

    def on_message_complete(self) -> None:
        if self._body is not EMPTY_BODY:
            self._body.finish()
        if self._draining:
            self._draining = False
            self._idle_since = time.monotonic()

    # -- running requests ------------------------------------------------------------------
    def _start_parsed(self) -> None:
        request = self._starting
        if request is not None:
            self._starting = None
            self._run(request)

    def _run(self, request: Request) -> None:
        response = Response(self, request)
        self._current = response
        try:
            pending = self.server.handler(request, response)
        except Exception:
            self._handler_failed(request, response)
            return
        if pending is not None:
            self._task = self._loop.create_task(self._handle(pending, request, response))

    async def _handle(self, pending: Awaitable[None], request: Request, response: Response) -> None:
        try:
            await pending
        except asyncio.CancelledError:
            if not response.finished and not self.closed:
                response.abort()
            raise
        except Exception:
            self._handler_failed(request, response)
        else:
            if not response.finished:
                if response.started:
                    response.end()
                else:
                    response.send(500, b"handler returned without a response\n")

    def _handler_failed(self, request: Request, response: Response) -> None:
        log.exception("handler failed for %s %s", request.method.decode(), request.target[:200])
        if response.finished:
            return
        if response.started:
            response.abort()
        else:
            response.keep_alive = False
            response.send(500, b"internal error in the proxy; see its log\n")

    def _run_next(self) -> None:
        if self.closed or self._current is not None or not self._pipeline:
            return
        self._run(self._pipeline.popleft())
        if not self._pipeline and self._pipeline_paused:
            self._pipeline_paused = False
            if not self._body_paused:
                self.transport.resume_reading()

    def response_done(self, response: Response) -> None:
        if response is not self._current:
            return
        self._current = None
        self._task = None
        if self._flow is not None:
            if self._flow_paused:
                self._resume_flow()
            self._flow = None
        if self.closed:
            return
        if self._rejection is not None:
            self.transport.write(self._rejection)
            self._linger()
            return
        request_body = self._body if not self._pipeline else None
        if response.keep_alive and request_body is not None and drainable(request_body):
            # Answered before its body was all read (an app that answers first): a client that saw a
            # keep-alive answer may send its next request at once, so read and drop the rest rather
            # than close under it. Bounded by DRAIN_MAX_BYTES and, in time, by the body timeout.
            request_body.take_buffered()
            self._draining = True
            self._idle_since = time.monotonic()
            return
        if not response.keep_alive or (request_body is not None and not request_body.complete):
            # The client's unread body would be parsed as the next request: close instead.
            if request_body is not None and not request_body.complete:
                self._linger()
            else:
                self.transport.close()
            return
        if self._pipeline:
            self._loop.call_soon(self._run_next)  # not recursively: a pipeline may be long
        else:
            self._idle_since = time.monotonic()

    def _reject(self, status: int, message: str) -> None:
        """Answer a request we could not parse or will not take, then close; a response in flight
        finishes first."""
        self._in_head = False
        self._starting = None
        self.transport.pause_reading()
        if self._current is None:
            self._answer_and_close(status, message)
        else:
            self._current.keep_alive = False
            self._rejection = plain_answer(status, message)

    def _cut_off(self, status: int, message: str) -> None:
        """The running request's body broke a limit: its handler is told the client left, and the
        client gets ``status`` (or, if the handler's answer already began, a dropped connection)."""
        self._body.fail(ClientDisconnected(message))
        self._starting = None  # parsed in this read but not run: it never will be
        current = self._current
        if current is not None:
            self._current = None
            task, self._task = self._task, None
            started = current.started
            if not current.finished:
                current.finished = True
                if current.on_abort is not None:
                    current.on_abort()
            if task is not None and not task.done():
                task.cancel()
            if started:
                self.transport.abort()
                return
        self._reject(status, message)

    def _answer_and_close(self, status: int, message: str, extra_headers: bytes = b"") -> None:
        self.transport.write(plain_answer(status, message, extra_headers))
        self._linger()

    def _linger(self) -> None:
        """Half-close after a final answer and drop what the client still sends, for up to ``LINGER_S``
        seconds: closing with unread bytes would reset the connection, and a reset can destroy the answer
        before the client reads it (nginx's lingering close)."""
        server = self.server
        transport = self.transport
        if self._lingering or self.closed:
            return
        if not server.may_linger() or not transport.can_write_eof():
            transport.close()
            return
        try:
            transport.write_eof()
        except (OSError, RuntimeError):  # the client reset the connection meanwhile (ENOTCONN)
            transport.abort()
            return
        self._lingering = self._discard = True
        server.linger_began()
        self._linger_timer = self._loop.call_later(LINGER_S, transport.abort)
        transport.resume_reading()

    # -- writing and the body's flow ----------------------------------------------------------
    def abort_response(self) -> None:
        """The running response gave up after its head went out: the client sees the connection drop."""
        self._current = None
        if not self.closed:
            self.transport.abort()

    def send_continue(self) -> None:
        if not self.closed:
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def pause_for_body(self) -> None:
        if not self._body_paused:
            self._body_paused = True
            self.transport.pause_reading()

    def body_drained(self) -> None:
        if self._body_paused and self._body.buffered <= self.limits.body_buffer // 2:
            self._body_paused = False
            if not self._pipeline_paused and not self.closed:
                self.transport.resume_reading()

    # -- housekeeping ----------------------------------------------------------------------
    def check_timeouts(self, now: float) -> None:
        """Enforce the head, body and keep-alive timeouts (called about once a second)."""
        if self._lingering or self.closed:
            return
        limits = self.limits
        if self._current is not None or self._pipeline:
            body = self._body
            unasked = body is EMPTY_BODY or body.complete or body.expect_continue
            if unasked or self._body_paused or self._pipeline:
                self._body_mark = -1  # not waiting on the client: the handler has the body or has not asked
            elif body.received != self._body_mark:
                self._body_mark, self._body_mark_at = body.received, now
            elif now - self._body_mark_at > limits.body_timeout:
                self._cut_off(408, f"no request body bytes for {limits.body_timeout:g} s")
            return
        if self._in_head:
            if now - self._head_started > limits.head_timeout:
                self._reject(408, f"request head not complete within {limits.head_timeout:g} s")
        else:
            quiet = limits.keepalive_timeout if not self._fresh else limits.head_timeout
            if now - self._idle_since > (limits.body_timeout if self._draining else quiet):
                self.transport.close()

    def close_if_idle(self) -> bool:
        """Close the connection if no request is in it (none running, queued or arriving); True if so."""
        if self._current is None and not self._in_head and not self._pipeline and not self.closed:
            self.transport.close()
            return True
        return False

    def close_after_response(self) -> None:
        """End the connection once the response in flight is finished (a server shutting down)."""
        if self._current is not None:
            self._current.keep_alive = False

    def abort(self) -> None:
        """Drop the connection now, whatever is in flight (a shutdown's grace ran out)."""
        if not self.closed:
            self.transport.abort()
