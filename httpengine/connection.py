"""A small, fast HTTP/1.1 server core: an asyncio Protocol driving httptools.

Why not uvicorn or a framework: the queue-proxy and the activator sit on the hot path of every
request, and every microsecond of Python there is paid twice (once per hop). This core does only
what a proxy needs — parse, stream, frame — and hands each request to a handler.

API (shared by the queue-proxy and the activator; keep it stable)::

    async def handler(request: Request, response: Response) -> None: ...
    # or, for a hot path that should not pay for a task per request:
    def handler(request: Request, response: Response) -> Awaitable[None] | None: ...

    server = HttpServer(handler, limits=Limits(), name="serving")
    host, port = await server.start("127.0.0.1", 0)       # port 0 picks a free port
    ...
    await server.shutdown(grace=30.0)                       # stop accepting, let requests finish

A plain (non-async) handler runs as soon as the request's read is parsed. It returns None once it
has answered or has arranged to answer later from callbacks (then ``response.on_abort`` is how it
learns that the client left), or an awaitable, which is run as a task like an async handler's.

``Request``: ``method`` (bytes, e.g. b"GET"), ``target`` (raw request-target bytes, path and query),
``path`` (str, no query), ``headers`` (list of ``(name, value)`` bytes, names lower-cased, in arrival
order), ``index`` (dict: lower-case name -> first value), ``header(name)`` (the same lookup),
``http_version`` ("1.1"), ``keep_alive``, ``client`` (peer "ip" string) and ``body`` (a
``RequestBody``).

``RequestBody``: ``await body.read()`` returns the next chunk, ``b""`` at the end; ``await
body.read_all(limit)``; ``complete`` is True once the whole body has arrived; ``chunked`` and
``content_length`` describe the client's framing; ``take_buffered()`` pops what has arrived so far.
Chunks are streamed, never buffered whole: past ``Limits.body_buffer`` bytes the connection stops
reading from the client until the handler catches up. ``Expect: 100-continue`` is answered when the
handler first waits for body bytes. If the client disconnects mid-body, ``read`` raises
``ClientDisconnected``.

``Response``: ``start(status, headers, content_length=None)`` queues the head (headers are
``(name, value)`` bytes pairs without framing headers: no Content-Length, Transfer-Encoding or
Connection); the body is chunked when the length is unknown (close-delimited for HTTP/1.0 clients).
``write(data)`` sends a chunk (together with the queued head, so a small response is one send),
``flush()`` sends a queued head alone, ``end(data=b"")`` finishes the response, ``send(status, body,
headers, content_type)`` does all three, ``abort()`` drops the connection (for failures after the head
went out). ``await drain()`` waits while the client is not reading; ``link_flow(transport)`` pauses and
resumes another transport's reading with this client's write buffer (a proxy's backpressure).
``retract()`` takes back a queued head that has not been sent (False once bytes went out).
``started``, ``finished``, ``status`` and ``last_write`` (monotonic seconds) describe progress.
``on_abort`` (a callable, default None) is called if the client goes away before the response is
finished. ``accepts_raw``/``start_raw(status, head)`` let a proxy pass an upstream's complete,
fixed-length head through unchanged.

Connections are persistent and pipelining-safe: a pipelined request waits until the previous
response is finished. Malformed requests get 400; a request past one of the server's ``Limits`` gets
414, 431, 413 or 408 and a connection past its connection cap 503 (each closes that connection; the
table is in docs/wire-contracts.md, "HTTP limits"); other connections are not affected. A handler
that raises gets 500 (or an aborted connection if its response had started); an async handler that
returns without finishing its response has it finished. If the client goes away (closes or
half-closes its connection), the handler's task is cancelled. A body that turns malformed or too large
while its request runs ends that request (the handler is told the client left; the client gets 400
or 413). No protocol switching: an upgrade request (or CONNECT) is served as a plain request and the
connection closes after it; one with a body is answered 400.
"""

from __future__ import annotations

import asyncio
import logging
import resource
import time
import zlib
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from http import HTTPStatus
from urllib.parse import unquote

import httptools

log = logging.getLogger(__name__)

Handler = Callable[["Request", "Response"], "Awaitable[None] | None"]
Headers = list[tuple[bytes, bytes]]

_STATUS_LINES: dict[int, bytes] = {
    s.value: b"HTTP/1.1 %d %s\r\n" % (s.value, s.phrase.encode()) for s in HTTPStatus
}
_NO_BODY_STATUSES = frozenset({204, 304})
_CHUNK_END = b"0\r\n\r\n"
_COPY_LIMIT = 64 * 1024  # bodies below this are joined to their head and leave in one send


def _plain_answer(status: int, message: str, extra_headers: bytes = b"") -> bytes:
    """A complete text response that closes the connection (refusals the engine answers itself)."""
    body = (message + "\n").encode()
    return status_line(status) + (
        b"content-type: text/plain; charset=utf-8\r\ncontent-length: %d\r\n%bconnection: close\r\n\r\n%b"
        % (len(body), extra_headers, body)
    )


def status_line(status: int) -> bytes:
    line = _STATUS_LINES.get(status)
    if line is None:
        line = _STATUS_LINES[status] = b"HTTP/1.1 %d Status\r\n" % status
    return line


@dataclass(frozen=True, slots=True)
class Limits:
    """The HTTP limits of every server we run, with the answer a client sees past each one.

    One set, defined here only, so a hostile or broken client meets the same bounds at the
    queue-proxy, the activator, ``kpa up`` and the predictor; docs/wire-contracts.md ("HTTP limits")
    tabulates them. Defaults follow nginx and Go/Knative servers: nginx's 8 KiB request line, 60 s
    header and body timeouts and 75 s keep-alive; Knative's one-minute ReadHeaderTimeout.
    """

    max_url_bytes: int = 8 * 1024  # the request line's target; longer: 414
    max_head_bytes: int = 64 * 1024  # request line + headers; beyond it: 431
    max_headers: int = 100  # header fields; more: 431
    # A declared Content-Length above it: 413 before a body byte is read; a chunked body or a
    # decompressed one (``inflate``) growing past it: 413 when it does.
    max_body_bytes: int = 256 * 1024 * 1024
    body_buffer: int = 256 * 1024  # stop reading from the client past this many unread body bytes
    head_timeout: float = 60.0  # a request head (or a new connection's first one) taking longer: 408
    body_timeout: float = 60.0  # no body bytes for this long while the request waits for them: 408
    keepalive_timeout: float = 75.0  # close a connection idle between requests this long
    # Connections served at once; one more is answered 503 and closed. None: derived from the
    # process's descriptor limit when the server is made (``default_max_connections``).
    max_connections: int | None = None
    # Treat a client's half-close (EOF) as the client leaving and cancel its request, as Go's net/http
    # does; the activator needs it so a request held for capacity is let go when its client gives up.
    cancel_on_client_eof: bool = False

    @classmethod
    def control(cls) -> Limits:
        """Limits for an admin, stats or metrics port: a few connections, so a flood there cannot take
        the descriptors that the serving port's reserve keeps for health checks and probes."""
        return cls(max_connections=CONTROL_CONNECTIONS)


CONTROL_CONNECTIONS = 64
LINGER_S = 2.0  # how long a refused connection may still send before it is cut off
MAX_LINGERING = 64  # refused connections lingering at once per server; more are closed at once


def raise_fd_limit() -> int:
    """Raise this process's soft limit on open descriptors to its hard limit; returns the soft limit now.

    Every server process calls it first: the soft limit is often 1,024 while the hard one allows far
    more, and every client connection (and a proxy's upstream connection) is a descriptor.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        try:
            with open("/proc/sys/fs/nr_open") as nr_open:  # Linux refuses more than this
                hard = int(nr_open.read())
        except (OSError, ValueError):
            hard = 1 << 20
    if soft != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
            soft = hard
        except (OSError, ValueError) as exc:
            log.warning("cannot raise the open-file limit from %d to %d: %s", soft, hard, exc)
    return soft


def default_max_connections(fd_limit: int | None = None) -> int:
    """The connection cap for a server in a process allowed ``fd_limit`` open descriptors (default: the
    process's soft limit).

    A reserve (a quarter of the limit, at most 1,024) stays free for what must keep working while a
    serving port is full: health and stats ports, readiness probes, log files. Half of the rest is
    the cap, since a proxied connection may hold an upstream connection as well.
    """
    if fd_limit is None:
        fd_limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        if fd_limit == resource.RLIM_INFINITY:
            fd_limit = 1 << 20
    reserve = min(1024, max(32, fd_limit // 4))
    return max(8, (fd_limit - reserve) // 2)


class ClientDisconnected(ConnectionError):
    """The client closed the connection before its request body was complete."""


class RequestRefused(Exception):
    """A request broke one of the ``Limits`` (or could not be decoded): answered with ``status``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def inflate(data: bytes, encoding: bytes, limit: int) -> bytes:
    """``data`` decoded from its Content-Encoding (identity, gzip or deflate): at most ``limit`` bytes.

    Raises ``RequestRefused``: 413 when the decoded body would pass ``limit`` (a megabyte of gzip can
    hold a gigabyte; decoding stops at the limit), 400 for an unknown coding or corrupt data.
    """
    coding = encoding.strip().lower()
    if coding in (b"", b"identity"):
        return data
    if coding not in (b"gzip", b"x-gzip", b"deflate"):
        shown = coding.decode(errors="replace")
        raise RequestRefused(400, f"Content-Encoding {shown!r} not supported; use gzip or deflate")
    decoder = zlib.decompressobj(31 if coding != b"deflate" else 15)
    try:
        out = decoder.decompress(data, limit + 1)
    except zlib.error as exc:
        raise RequestRefused(400, f"body is not valid {coding.decode()} data: {exc}") from None
    if len(out) > limit or decoder.unconsumed_tail:
        raise RequestRefused(413, f"request body larger than {limit} bytes once decompressed")
    if not decoder.eof:
        raise RequestRefused(400, f"body is not valid {coding.decode()} data: it ends early")
    return out


class RequestBody:
    """The request body as a stream of chunks, filled by the connection and drained by the handler."""

    __slots__ = (
        "_chunks",
        "_conn",
        "_continue",
        "_error",
        "_size",
        "_waiter",
        "chunked",
        "complete",
        "content_length",
        "received",
    )

    def __init__(self, conn: _Connection | None, content_length: int | None, chunked: bool) -> None:
        self._conn = conn
        self._chunks: deque[bytes] = deque()
        self._size = 0
        self._waiter: asyncio.Future[None] | None = None
        self._error: BaseException | None = None
        self._continue = False
        self.content_length = content_length
        self.chunked = chunked
        self.complete = conn is None
        self.received = 0  # body bytes that have arrived in all (the body timeout watches it move)

    # -- fed by the connection -------------------------------------------------------------
    def _feed(self, chunk: bytes) -> None:
        self.received += len(chunk)
        limits = self._conn.limits
        if self.chunked and self.received > limits.max_body_bytes:  # a declared length was checked before
            raise RequestRefused(413, f"request body larger than {limits.max_body_bytes} bytes")
        self._chunks.append(chunk)
        self._size += len(chunk)
        if self._size > limits.body_buffer:
            self._conn._pause_for_body()
        self._wake()

    def _finish(self) -> None:
        self.complete = True
        self._wake()

    def _fail(self, exc: BaseException) -> None:
        if not self.complete:
            self._error = exc
            self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    # -- read by the handler ---------------------------------------------------------------
    @property
    def buffered(self) -> int:
        return self._size

    def take_buffered(self) -> bytes:
        """Everything received and not yet read, as one bytes object (may be empty)."""
        chunks = self._chunks
        if not chunks:
            return b""
        data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        chunks.clear()
        self._size = 0
        if self._conn is not None:
            self._conn._body_drained()
        return data

    async def read(self) -> bytes:
        """The next chunk; ``b""`` once the body is complete."""
        while not self._chunks:
            if self.complete:
                return b""
            if self._error is not None:
                raise self._error
            if self._continue:
                self._continue = False
                self._conn._send_continue()
            self._waiter = asyncio.get_running_loop().create_future()
            await self._waiter
        chunk = self._chunks.popleft()
        self._size -= len(chunk)
        self._conn._body_drained()
        return chunk

    async def read_all(self, limit: int) -> bytes:
        """The whole body, refusing (ValueError) one larger than ``limit`` bytes."""
        parts = []
        total = 0
        while chunk := await self.read():
            total += len(chunk)
            if total > limit:
                raise ValueError(f"request body larger than {limit} bytes")
            parts.append(chunk)
        return b"".join(parts)


EMPTY_BODY = RequestBody(None, 0, False)


class Request:
    __slots__ = ("body", "client", "headers", "http_version", "index", "keep_alive", "method", "target")

    def __init__(
        self,
        method: bytes,
        target: bytes,
        headers: Headers,
        http_version: str,
        keep_alive: bool,
        client: str,
        body: RequestBody,
        index: dict[bytes, bytes] | None = None,
    ) -> None:
        self.method = method
        self.target = target
        self.headers = headers
        self.http_version = http_version
        self.keep_alive = keep_alive
        self.client = client
        self.body = body
        self.index = dict(reversed(headers)) if index is None else index  # lower-case name -> first value

    def header(self, name: bytes) -> bytes | None:
        """First value of header ``name`` (lower-case bytes), or None."""
        return self.index.get(name)

    @property
    def path(self) -> str:
        return unquote(self.target.partition(b"?")[0].decode("latin-1"))

    @property
    def query(self) -> str:
        return self.target.partition(b"?")[2].decode("latin-1")


class Response:
    """Writes one response on a connection; see the module docstring for the protocol."""

    __slots__ = (
        "_chunked",
        "_conn",
        "_is_head",
        "_pending",
        "finished",
        "keep_alive",
        "last_write",
        "on_abort",
        "started",
        "status",
    )

    def __init__(self, conn: _Connection, request: Request) -> None:
        self._conn = conn
        self._is_head = request.method == b"HEAD"
        self.keep_alive = request.keep_alive
        self._chunked = False
        self._pending: bytes | None = None
        self.started = False
        self.finished = False
        self.status = 0
        self.last_write = 0.0
        self.on_abort: Callable[[], None] | None = None

    def start(
        self, status: int, headers: Iterable[tuple[bytes, bytes]] = (), content_length: int | None = None
    ) -> None:
        if self.started:
            raise RuntimeError("response already started")
        self.started = True
        self.status = status
        parts = [status_line(status)]
        for name, value in headers:
            parts.append(b"%s: %s\r\n" % (name, value))
        if content_length is not None:
            parts.append(b"content-length: %d\r\n" % content_length)
        elif status in _NO_BODY_STATUSES or status < 200 or self._is_head:
            pass
        elif self._conn.http11:
            parts.append(b"transfer-encoding: chunked\r\n")
            self._chunked = True
        else:
            self.keep_alive = False  # HTTP/1.0 without a length: the body ends when the connection does
        if not self.keep_alive:
            parts.append(b"connection: close\r\n\r\n")
        elif self._conn.http11:
            parts.append(b"\r\n")
        else:
            parts.append(b"connection: keep-alive\r\n\r\n")
        self._pending = b"".join(parts)

    @property
    def accepts_raw(self) -> bool:
        """Whether an upstream's fixed-length head may be passed through as is (``start_raw``)."""
        return self.keep_alive and self._conn.http11 and not self._is_head and not self.started

    def start_raw(self, status: int, head: bytes) -> None:
        """Queue a complete, already framed response head (a proxy's fast path; see ``accepts_raw``)."""
        if self.started:
            raise RuntimeError("response already started")
        self.started = True
        self.status = status
        self._pending = head

    def retract(self) -> bool:
        """Take back a head that ``start`` queued but that has not gone out; False if bytes went out.

        A proxy that learns the upstream's answer is broken before any of it reached the client may
        then answer for it (a 502 that says why) instead of cutting the connection.
        """
        if self.finished or not self.started or self._pending is None:
            return not self.started
        self.started = False
        self.status = 0
        self._pending = None
        self._chunked = False
        return True

    def write(self, data: bytes) -> None:
        if self.finished:
            raise RuntimeError("response already finished")
        if not self.started:
            raise RuntimeError("response.write() before start()")
        if data and not self._is_head:
            if self._chunked:
                data = b"%x\r\n%b\r\n" % (len(data), data)
        else:
            data = b""
        if self._pending is not None:
            data = self._pending + data
            self._pending = None
        if data:
            self.last_write = time.monotonic()
            conn = self._conn
            if not conn._closed:
                conn.transport.write(data)

    def flush(self) -> None:
        """Send a queued head now (streaming responses whose first body bytes may be late)."""
        if self._pending is not None:
            self.write(b"")

    def end(self, data: bytes = b"") -> None:
        if self.finished:
            return
        if not self.started:
            raise RuntimeError("response.end() before start()")
        if self._is_head:
            data = b""
        elif self._chunked:
            data = b"%x\r\n%b\r\n0\r\n\r\n" % (len(data), data) if data else _CHUNK_END
        conn = self._conn
        if self._pending is not None:
            if len(data) < _COPY_LIMIT:
                data = self._pending + data
            elif not conn._closed:  # a large body leaves beside its head instead of being copied into it
                conn.transport.write(self._pending)
            self._pending = None
        self.finished = True
        if data:
            self.last_write = time.monotonic()
            if not conn._closed:
                conn.transport.write(data)
        conn._response_done(self)

    def send(
        self,
        status: int,
        body: bytes = b"",
        headers: Iterable[tuple[bytes, bytes]] = (),
        content_type: bytes = b"text/plain; charset=utf-8",
    ) -> None:
        head = [(b"content-type", content_type), *headers] if body else list(headers)
        self.start(status, head, content_length=len(body))
        self.end(body)

    def abort(self) -> None:
        """Give up on this response: the client sees the connection drop (for failures after the head)."""
        self.finished = True
        self._conn._abort()

    async def drain(self) -> None:
        await self._conn._drained()

    def link_flow(self, transport: asyncio.ReadTransport | None) -> None:
        """Pause ``transport``'s reading whenever this client stops reading (None unlinks)."""
        conn = self._conn
        if conn._flow_paused or (transport is not None and conn._write_paused):
            conn._link_flow(transport)
        else:
            conn._flow = transport


class _Connection(asyncio.Protocol):
    """One client connection; parses requests and runs them one at a time."""

    __slots__ = (
        "_body",
        "_body_mark",
        "_body_mark_at",
        "_body_paused",
        "_closed",
        "_current",
        "_discard",
        "_drain_waiter",
        "_flow",
        "_flow_paused",
        "_fresh",
        "_head_size",
        "_head_started",
        "_headers",
        "_idle_since",
        "_in_head",
        "_linger_timer",
        "_lingering",
        "_pipeline",
        "_pipeline_paused",
        "_read_size",
        "_rejection",
        "_starting",
        "_task",
        "_url",
        "_write_paused",
        "client",
        "http11",
        "limits",
        "parser",
        "server",
        "transport",
    )

    def __init__(self, server: HttpServer) -> None:
        self.server = server
        self.limits = server.limits
        self.transport: asyncio.Transport | None = None
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
        self._write_paused = False
        self._drain_waiter: asyncio.Future[None] | None = None
        self._flow: asyncio.ReadTransport | None = None
        self._flow_paused = False
        self._closed = False
        self._idle_since = time.monotonic()
        self._fresh = True  # no request has begun yet: the head timeout runs from the accept
        self._body_mark = -1  # body bytes received when the body timeout last saw them move, and when
        self._body_mark_at = 0.0
        self._rejection: bytes | None = None  # an answer to send once the response in flight is done
        self._lingering = False
        self._linger_timer: asyncio.TimerHandle | None = None
        self._discard = False  # drop what the client sends (lingering after a refusal, or upgraded)

    # -- asyncio.Protocol ------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        server = self.server
        if len(server._connections) >= server.max_connections:
            server._note_refusal()
            self._answer_and_close(
                503,
                f"{server.name}: at its cap of {server.max_connections} connections; retry shortly",
                b"retry-after: 1\r\n",
            )
            return
        peer = transport.get_extra_info("peername")
        self.client = peer[0] if isinstance(peer, tuple) else ""
        server._connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self.server._connections.discard(self)
        if self._lingering:
            self._lingering = False
            self.server._lingering -= 1
            self._linger_timer.cancel()
        gone = ClientDisconnected("client closed the connection")
        self._body._fail(gone)
        for queued in self._pipeline:
            queued.body._fail(gone)
        self._pipeline.clear()
        current = self._current
        if current is not None and not current.finished and current.on_abort is not None:
            current.on_abort()
        if self._task is not None and not self._task.done():
            self._task.cancel()
        self._wake_drain()
        self._link_flow(None)

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
                self._reject(
                    400,
                    "a protocol upgrade request with a body is not supported here; send it without Upgrade",
                )
                return
        self._start_parsed()

    def pause_writing(self) -> None:
        self._write_paused = True
        if self._flow is not None and not self._flow_paused:
            self._flow_paused = True
            self._flow.pause_reading()

    def resume_writing(self) -> None:
        self._write_paused = False
        self._wake_drain()
        self._resume_flow()

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
        encoding = index.get(b"transfer-encoding")
        length = index.get(b"content-length")
        if encoding is not None or (length is not None and length != b"0"):
            chunked = encoding is not None and b"chunked" in encoding.lower()
            declared = None if chunked else int(length or 0)
            if declared is not None and declared > limits.max_body_bytes:
                raise RequestRefused(
                    413, f"request body of {declared} bytes is larger than {limits.max_body_bytes} bytes"
                )
            body = RequestBody(self, declared, chunked)
            expect = index.get(b"expect")
            body._continue = self.http11 and expect is not None and expect.lower() == b"100-continue"
        else:
            body = EMPTY_BODY
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
        self._body._feed(chunk)

    def on_message_complete(self) -> None:
        if self._body is not EMPTY_BODY:
            self._body._finish()

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
            self._task = self.server._loop.create_task(self._handle(pending, request, response))

    async def _handle(self, pending: Awaitable[None], request: Request, response: Response) -> None:
        try:
            await pending
        except asyncio.CancelledError:
            if not response.finished and not self._closed:
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
        if self._closed or self._current is not None or not self._pipeline:
            return
        self._run(self._pipeline.popleft())
        if not self._pipeline and self._pipeline_paused:
            self._pipeline_paused = False
            if not self._body_paused:
                self.transport.resume_reading()

    def _response_done(self, response: Response) -> None:
        if response is not self._current:
            return
        self._current = None
        self._task = None
        if self._flow is not None:
            if self._flow_paused:
                self._resume_flow()
            self._flow = None
        if self._closed:
            return
        if self._rejection is not None:
            self.transport.write(self._rejection)
            self._linger()
            return
        request_body = self._body if not self._pipeline else None
        if not response.keep_alive or (request_body is not None and not request_body.complete):
            # The client's unread body would be parsed as the next request: close instead.
            if request_body is not None and not request_body.complete:
                self._linger()
            else:
                self.transport.close()
            return
        if self._pipeline:
            self.server._loop.call_soon(self._run_next)  # not recursively: a pipeline may be long
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
            self._rejection = _plain_answer(status, message)

    def _cut_off(self, status: int, message: str) -> None:
        """The running request's body broke a limit: its handler is told the client left, and the
        client gets ``status`` (or, if the handler's answer already began, a dropped connection)."""
        self._body._fail(ClientDisconnected(message))
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
        self.transport.write(_plain_answer(status, message, extra_headers))
        self._linger()

    def _linger(self) -> None:
        """Half-close after a final answer and drop what the client still sends, for up to ``LINGER_S``
        seconds: closing with unread bytes would reset the connection, and a reset can destroy the answer
        before the client reads it (nginx's lingering close)."""
        server = self.server
        transport = self.transport
        if self._lingering or self._closed:
            return
        if server._lingering >= MAX_LINGERING or not transport.can_write_eof():
            transport.close()
            return
        try:
            transport.write_eof()
        except (OSError, RuntimeError):  # the client reset the connection meanwhile (ENOTCONN)
            transport.abort()
            return
        self._lingering = self._discard = True
        server._lingering += 1
        self._linger_timer = server._loop.call_later(LINGER_S, transport.abort)
        transport.resume_reading()

    # -- writing and flow control ----------------------------------------------------------
    def _abort(self) -> None:
        self._current = None
        if not self._closed:
            self.transport.abort()

    def _send_continue(self) -> None:
        if not self._closed:
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def _pause_for_body(self) -> None:
        if not self._body_paused:
            self._body_paused = True
            self.transport.pause_reading()

    def _body_drained(self) -> None:
        if self._body_paused and self._body._size <= self.limits.body_buffer // 2:
            self._body_paused = False
            if not self._pipeline_paused and not self._closed:
                self.transport.resume_reading()

    async def _drained(self) -> None:
        while self._write_paused and not self._closed:
            self._drain_waiter = self.server._loop.create_future()
            await self._drain_waiter

    def _wake_drain(self) -> None:
        waiter = self._drain_waiter
        if waiter is not None:
            self._drain_waiter = None
            if not waiter.done():
                waiter.set_result(None)

    def _link_flow(self, transport: asyncio.ReadTransport | None) -> None:
        self._resume_flow()
        self._flow = transport
        if transport is not None and self._write_paused:
            self._flow_paused = True
            transport.pause_reading()

    def _resume_flow(self) -> None:
        if self._flow_paused:
            self._flow_paused = False
            if not self._flow.is_closing():
                self._flow.resume_reading()

    # -- housekeeping ----------------------------------------------------------------------
    def _check_timeouts(self, now: float) -> None:
        """Enforce the head, body and keep-alive timeouts (called about once a second)."""
        if self._lingering or self._closed:
            return
        limits = self.limits
        if self._current is not None or self._pipeline:
            body = self._body
            if body is EMPTY_BODY or body.complete or self._body_paused or body._continue or self._pipeline:
                self._body_mark = -1  # not waiting on the client: the handler has the body or has not asked
            elif body.received != self._body_mark:
                self._body_mark, self._body_mark_at = body.received, now
            elif now - self._body_mark_at > limits.body_timeout:
                self._cut_off(408, f"no request body bytes for {limits.body_timeout:g} s")
            return
        if self._in_head:
            if now - self._head_started > limits.head_timeout:
                self._reject(408, f"request head not complete within {limits.head_timeout:g} s")
        elif now - self._idle_since > (limits.head_timeout if self._fresh else limits.keepalive_timeout):
            self.transport.close()

    def _close_if_idle(self) -> bool:
        if self._current is None and not self._in_head and not self._pipeline and not self._closed:
            self.transport.close()
            return True
        return False


class HttpServer:
    """Listens on one address and runs ``handler`` for each request; see the module docstring."""

    def __init__(self, handler: Handler, *, limits: Limits | None = None, name: str = "http") -> None:
        self.handler = handler
        self.limits = limits or Limits()
        self.name = name
        self.max_connections = self.limits.max_connections or default_max_connections()
        self._connections: set[_Connection] = set()
        self._lingering = 0  # refused connections still draining (see _Connection._linger)
        self._refused = 0  # connections refused at the cap, in all
        self._cap_logged = -10.0
        self._server: asyncio.AbstractServer | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sweeper: asyncio.TimerHandle | None = None
        self.host = ""
        self.port = 0

    async def start(self, host: str = "127.0.0.1", port: int = 0, *, backlog: int = 2048) -> tuple[str, int]:
        """Bind and start accepting; returns the bound address (the real port when ``port`` is 0)."""
        self._loop = asyncio.get_running_loop()
        self._server = await self._loop.create_server(
            lambda: _Connection(self), host, port, backlog=backlog, reuse_address=True
        )
        sockname = self._server.sockets[0].getsockname()
        self.host, self.port = sockname[0], sockname[1]
        self._sweeper = self._loop.call_later(1.0, self._sweep)
        return self.host, self.port

    def _sweep(self) -> None:
        now = time.monotonic()
        for conn in list(self._connections):
            conn._check_timeouts(now)
        self._sweeper = self._loop.call_later(1.0, self._sweep)

    def _note_refusal(self) -> None:
        self._refused += 1
        now = time.monotonic()
        if now - self._cap_logged >= 10.0:
            self._cap_logged = now
            log.warning(
                "%s: at its cap of %d connections; refusing new ones with 503 (%d so far)",
                self.name, self.max_connections, self._refused,
            )  # fmt: skip

    def stop_accepting(self) -> None:
        if self._server is not None:
            self._server.close()

    async def shutdown(self, grace: float = 30.0) -> None:
        """Stop accepting, close idle connections, give in-flight requests ``grace`` seconds, close."""
        self.stop_accepting()
        deadline = time.monotonic() + grace
        while True:
            for conn in list(self._connections):
                if not conn._close_if_idle() and conn._current is not None:
                    conn._current.keep_alive = False
            if not self._connections or time.monotonic() >= deadline:
                break
            await asyncio.sleep(0.02)
        for conn in list(self._connections):
            if not conn._closed:
                conn.transport.abort()
        if self._sweeper is not None:
            self._sweeper.cancel()
        if self._server is not None:
            await self._server.wait_closed()
