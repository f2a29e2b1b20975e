"""Keep-alive HTTP/1.1 client pool to one upstream ``host:port``, made to forward server requests.

The queue-proxy forwards to its user container and the activator to a pod's queue-proxy through
this pool; both need the same three things from it: stream bodies both ways with backpressure,
reuse connections, and say precisely what failed.

API (shared by the queue-proxy and the activator; keep it stable)::

    pool = UpstreamPool("127.0.0.1", 8080, max_idle=100)
    status = await pool.forward(request, response,            # http11.Request / http11.Response
                                host=None,                    # replace the Host header
                                add_headers=((b"k-proxy-request", b"activator"),),
                                drop_headers=frozenset({b"knative-serving-revision"}))
    status, headers, body = await pool.request(b"GET", b"/healthz", headers=((b"k-network-probe", b"queue"),))
    dispatched = pool.dispatch(request, response, on_done, host=..., drop_headers=...)  # no coroutine
    pool.close()

``forward`` sends the request upstream (hop-by-hop headers removed, including those named in
``Connection``; ``X-Forwarded-For`` extended with the client address), streams the request body as
it arrives, and streams the response into ``response`` (re-framed for the client; the head and the
first body bytes leave in one send; a plain fixed-length upstream head is passed through unparsed).
It returns the status once the response is complete. ``dispatch`` does the same without a
coroutine when it can start at once (an idle pooled connection, the whole body in hand): it returns
a ``Dispatched`` handle (``cancel()`` abandons the request) and calls ``on_done(status_or_error)``
later; otherwise it returns None and the caller awaits ``forward``. The
client's slowness pauses reading from the upstream and the upstream's slowness pauses reading from
the client, so neither body is ever held whole.

Errors:

* ``UpstreamConnectError``: no connection could be made (refused, unreachable, connect timeout).
  Nothing was sent and the request body is untouched, so the caller may retry it elsewhere
  (the activator tries another pod).
* ``UpstreamError``: the connection failed after the request was sent; ``response.started`` tells
  whether the client already has part of a response (then it can only be aborted).
* Cancelling ``forward`` (a timeout, the client leaving) closes the upstream connection.

An upstream that breaks HTTP framing is logged (a warning naming the upstream) and its connection
is closed, never reused: a malformed response, or bytes past the end of a response (more than its
Content-Length, or after its last chunk), fail the request with ``UpstreamError`` — before any of
the response went out the client can still be answered 502 (the queued head is retracted), after
that only cut off. Bytes that arrive once the response was complete and forwarded leave the
client's answer as it is.

A pooled connection the upstream closed while idle (uvicorn drops idle keep-alive connections after
5 s) is retried once on a fresh connection when not a byte came back and the whole request body was
in hand. Idle connections are also dropped after ``idle_timeout`` seconds to make that race rare.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Callable, Iterable

import httptools

from httpengine.connection import ClientDisconnected, Request, RequestBody, Response

log = logging.getLogger(__name__)

# Hop-by-hop headers (RFC 9110 §7.6.1 and the ones Go's ReverseProxy drops); Expect is answered here.
REQUEST_DROP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"expect",
    }
)
# The response is re-framed for the client, so its length and coding headers are rebuilt too.
RESPONSE_DROP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"proxy-authenticate",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"content-length",
    }
)
_NO_DROP: frozenset[bytes] = frozenset()

# The fast path's checks, on the lower-cased head (see ``_Connection._raw_head``).
_MAX_RAW_HEAD = 16 * 1024
_STATUS_LINE = re.compile(rb"HTTP/1\.1 ([2-5]\d\d) [^\r\n]*\r\n")
_RAW_BLOCKER = re.compile(
    rb"\r\n(?:transfer-encoding|connection|keep-alive|proxy-[a-z-]*|te|trailer|upgrade)[ \t]*:"
)
_FOLDED = re.compile(rb"\n[ \t]")  # one regex each: an alternation of the two scans 2-3x slower
_CONTENT_LENGTH = re.compile(rb"\r\ncontent-length:[ \t]*(\d+)[ \t]*\r\n")


def _plain_head(head: bytes) -> tuple[int, int] | None:
    """(status, content length) of a head the fast path may pass through as is, else None.

    Only ``HTTP/1.1 2xx-5xx`` heads with exactly one Content-Length, no hop-by-hop or framing
    headers and no oddities (bare CR/LF, folded lines) qualify; anything else goes through the
    full parser.
    """
    status_line = _STATUS_LINE.match(head)
    if status_line is None:
        return None
    lower = head.lower()
    line_ends = lower.count(b"\r\n")
    if lower.count(b"\n") != line_ends or lower.count(b"\r") != line_ends:
        return None  # a bare CR or LF
    if _FOLDED.search(lower) or _RAW_BLOCKER.search(lower):
        return None  # a folded line, or a header that needs the parser
    lengths = _CONTENT_LENGTH.findall(lower)
    if len(lengths) != 1:
        return None
    return int(status_line.group(1)), int(lengths[0])


class UpstreamError(ConnectionError):
    """The upstream failed this request after it was (at least partly) sent."""


class UpstreamConnectError(UpstreamError):
    """No connection to the upstream: nothing was sent, the request may be retried elsewhere."""


class _StaleConnection(UpstreamError):
    """A connection closed without a byte of response; retryable when it came from the pool."""


class _Excess(Exception):
    """Raised from the parser's callbacks: a second message began after the response was complete."""


class BufferedResponse:
    """A response sink that keeps the whole (small) response; used by ``UpstreamPool.request``."""

    def __init__(self) -> None:
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.started = False
        self.finished = False
        self._parts: list[bytes] = []

    def start(
        self, status: int, headers: Iterable[tuple[bytes, bytes]] = (), content_length: int | None = None
    ) -> None:
        self.started = True
        self.status = status
        self.headers = list(headers)

    def write(self, data: bytes) -> None:
        self._parts.append(data)

    accepts_raw = False

    def start_raw(self, status: int, head: bytes) -> None:
        raise NotImplementedError("buffered responses are parsed, never passed through raw")

    def retract(self) -> bool:
        if not self.finished:
            self.started = False
            self.status = 0
            self.headers = []
            self._parts = []
        return not self.started

    def flush(self) -> None:
        pass

    def end(self, data: bytes = b"") -> None:
        self._parts.append(data)
        self.finished = True

    def abort(self) -> None:
        self.finished = True

    def link_flow(self, transport: asyncio.ReadTransport | None) -> None:
        pass

    @property
    def body(self) -> bytes:
        return b"".join(self._parts)


def _frame(data: bytes, chunked: bool) -> bytes:
    if not chunked:
        return data
    return (b"%x\r\n%b\r\n0\r\n\r\n" % (len(data), data)) if data else b"0\r\n\r\n"


class _Connection(asyncio.Protocol):
    """One pooled upstream connection carrying one exchange at a time."""

    __slots__ = (
        "_body_parts",
        "_buffer",
        "_close_delimited",
        "_complete",
        "_drain_waiter",
        "_got_bytes",
        "_headers",
        "_interim",
        "_is_head",
        "_keep_alive",
        "_on_done",
        "_parsed",
        "_raw_left",
        "_replay",
        "_request_sent",
        "_response",
        "_started_now",
        "_status",
        "_write_paused",
        "closed",
        "last_used",
        "parser",
        "pool",
        "transport",
    )

    def __init__(self, pool: UpstreamPool) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.closed = False
        self.last_used = 0.0
        self._response: Response | BufferedResponse | None = None
        self._on_done: Callable[[int | BaseException], None] | None = None
        self._replay: Dispatched | None = None
        self._write_paused = False
        self._drain_waiter: asyncio.Future[None] | None = None
        self._reset()

    def _reset(self) -> None:
        self._parsed = False  # whether this exchange went through the parser (else: only the fast path)
        self._buffer = b""  # a response head still incomplete (fast path)
        self._raw_left = -1  # fast path: body bytes still expected; -1: not on the fast path
        self._status = 0
        self._headers: list[tuple[bytes, bytes]] = []
        self._body_parts: list[bytes] = []
        self._got_bytes = False
        self._complete = False
        self._interim = False
        self._close_delimited = False
        self._keep_alive = True
        self._is_head = False
        self._request_sent = True
        self._started_now = False

    # -- exchange --------------------------------------------------------------------------
    def begin(
        self,
        response: Response | BufferedResponse,
        is_head: bool,
        request_sent: bool,
        on_done: Callable[[int | BaseException], None],
        replay: Dispatched | None = None,
    ) -> None:
        """Start an exchange; ``on_done`` gets the status when the response is complete, or the error
        (``replay``'s judgement of it, when given: a stale pooled connection is tried again)."""
        self._response = response
        self._is_head = is_head
        self._request_sent = request_sent
        self._on_done = on_done
        self._replay = replay
        response.link_flow(self.transport)

    def cancel_exchange(self) -> None:
        """Drop the exchange in progress without reporting it (its owner gave up); closes the connection."""
        self._response = self._on_done = self._replay = None
        self.abort()

    async def pump(self, head: bytes, body: RequestBody) -> None:
        """Send a head and then a body that is still arriving from the client."""
        transport = self.transport
        transport.write(head)
        chunked = body.chunked
        try:
            while chunk := await body.read():
                if self.closed:
                    return
                transport.write(b"%x\r\n%b\r\n" % (len(chunk), chunk) if chunked else chunk)
                while self._write_paused and not self.closed:
                    self._drain_waiter = self.pool._loop.create_future()
                    await self._drain_waiter
            if chunked and not self.closed:
                transport.write(b"0\r\n\r\n")
            self._request_sent = True
        except ClientDisconnected:
            self.abort()

    def _finish(self) -> None:
        on_done, status = self._on_done, self._status
        reusable = self._keep_alive and self._request_sent and not self.closed
        self._response = self._on_done = self._replay = None
        if self._parsed:
            self._reset()
        else:  # the fast path changed only these
            self._status = 0
            self._raw_left = -1
            self._got_bytes = False
        idle = self.pool._idle
        if reusable and len(idle) < self.pool.max_idle:
            self.last_used = time.monotonic()
            idle.append(self)
        else:
            self.abort()
        if on_done is not None:
            on_done(status)

    def _fail(self, exc: BaseException) -> None:
        on_done = self._on_done if self._replay is None else self._replay._failed
        response = self._response
        if response is not None and response.started and not response.finished:
            response.retract()  # nothing of it went out yet: the caller can still answer 502
        self._response = self._on_done = self._replay = None
        self._reset()
        self.abort()
        if on_done is not None:
            on_done(exc)

    def abort(self) -> None:
        if not self.closed:
            self.closed = True
            self.transport.abort()

    # -- asyncio.Protocol ------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def _broken(self, what: str) -> None:
        """The upstream broke HTTP framing: say so in the log and fail the exchange (502 or a cut)."""
        message = f"upstream {self.pool.address} {what}"
        log.warning("%s; connection closed, not reused", message)
        self._fail(UpstreamError(message))

    def data_received(self, data: bytes) -> None:
        response = self._response
        if response is None:
            # Bytes nobody asked for, after a complete response: the connection cannot be trusted any
            # more. The response they followed was whole and stays with its client.
            log.warning(
                "upstream %s sent %d bytes after a complete response; connection closed, not reused",
                self.pool.address, len(data),
            )  # fmt: skip
            self.abort()
            return
        self._got_bytes = True
        if self._raw_left >= 0:
            self._raw_body(response, data)
            return
        if self._status == 0 and response.accepts_raw and not self._is_head:
            buffered = self._buffer + data if self._buffer else data
            end = buffered.find(b"\r\n\r\n")
            if end < 0 and len(buffered) < _MAX_RAW_HEAD:
                self._buffer = buffered
                return
            self._buffer = b""
            if end >= 0 and self._raw_head(response, buffered, end + 4):
                return
            data = buffered
        self._parsed = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:  # _Excess arrives wrapped in HttpParserCallbackError
            if self._complete:
                self._broken("sent bytes past the end of its response (more than its Content-Length)")
            else:
                self._broken(f"sent a malformed response: {exc}")
            return
        self._deliver(response)

    def _raw_head(self, response: Response, data: bytes, head_end: int) -> bool:
        """The fast path: pass a plain fixed-length response head through as it came.

        Saves parsing each header and re-serializing them. An upstream sends the same head again
        and again (only its Date changes, once a second), so the pool remembers the verdict on
        the last head it judged and a repeat costs one bytes comparison.
        """
        head = data[:head_end]
        pool = self.pool
        if head == pool._plain_head:
            status, length = pool._plain_verdict
        else:
            verdict = _plain_head(head)
            if verdict is None:
                return False
            pool._plain_head, pool._plain_verdict = head, verdict
            status, length = verdict
        left = length - (len(data) - head_end)
        if left < 0:
            return False  # more bytes than the response holds: let the parser judge them
        self._status = status
        response.start_raw(status, head)
        if left == 0:
            response.end(data[head_end:])
            self._finish()
        else:
            self._raw_left = left
            if len(data) > head_end:
                response.write(data[head_end:])
            # else: hold the head until the first body bytes, so both leave in one send
        return True

    def _raw_body(self, response: Response, data: bytes) -> None:
        left = self._raw_left - len(data)
        if response.finished:
            self._fail(UpstreamError("client went away"))
        elif left > 0:
            self._raw_left = left
            response.write(data)
        elif left == 0:
            response.end(data)
            self._finish()
        else:
            self._broken("sent bytes past the end of its response (more than its Content-Length)")

    def _deliver(self, response: Response | BufferedResponse) -> None:
        if response.finished:  # the client side gave up (aborted); nothing more to send
            self._fail(UpstreamError("client went away"))
            return
        parts = self._body_parts
        data = b""
        if parts:
            data = parts[0] if len(parts) == 1 else b"".join(parts)
            parts.clear()
        if self._complete:
            response.end(data)
            self._finish()
        elif data:
            response.write(data)
        elif self._started_now:
            response.flush()
        self._started_now = False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.pool._forget(self)
        waiter = self._drain_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        response = self._response
        if response is None:
            return
        if self._close_delimited and self._raw_left < 0:
            self._complete = True
            self._deliver(response)
        elif not self._got_bytes:
            self._fail(
                _StaleConnection(f"upstream {self.pool.address} closed the connection before responding")
            )
        else:
            self._fail(UpstreamError(f"upstream {self.pool.address} closed the connection mid-response"))

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        waiter = self._drain_waiter
        if waiter is not None:
            self._drain_waiter = None
            if not waiter.done():
                waiter.set_result(None)

    # -- httptools callbacks ---------------------------------------------------------------
    def on_message_begin(self) -> None:
        if self._complete:
            raise _Excess

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        parser = self.parser
        status = parser.get_status_code()
        if status < 200 and status != 101:
            self._interim = True  # 100 Continue, 103 Early Hints: not for the client here
            self._headers = []
            return
        self._status = status
        self._keep_alive = parser.should_keep_alive()
        length = None
        chunked = False
        out = []
        for name, value in self._headers:
            lname = name.lower()
            if lname in RESPONSE_DROP:
                if lname == b"content-length":
                    length = int(value)
                elif lname == b"transfer-encoding":
                    chunked = True
                continue
            out.append((name, value))
        self._headers = []
        if self._is_head:
            self._complete = True
            self.parser = httptools.HttpResponseParser(self)  # no body follows, whatever the length says
        elif length is None and not chunked and status not in (204, 304):
            self._close_delimited = True
            self._keep_alive = False
        self._response.start(status, out, length)
        self._started_now = True

    def on_body(self, chunk: bytes) -> None:
        self._body_parts.append(chunk)

    def on_message_complete(self) -> None:
        if self._interim:
            self._interim = False
        else:
            self._complete = True


def _settle(future: asyncio.Future[int]) -> Callable[[int | BaseException], None]:
    def settle(result: int | BaseException) -> None:
        if not future.done():
            if isinstance(result, BaseException):
                future.set_exception(result)
            else:
                future.set_result(result)

    return settle


class Dispatched:
    """A request ``UpstreamPool.dispatch`` sent on a pooled connection; ``cancel()`` abandons it."""

    __slots__ = ("conn", "head", "is_head", "on_done", "pool", "response", "task")

    def __init__(
        self,
        pool: UpstreamPool,
        conn: _Connection,
        head: bytes,
        response: Response,
        is_head: bool,
        on_done: Callable[[int | BaseException], None],
    ) -> None:
        self.pool = pool
        self.conn: _Connection | None = conn
        self.head = head  # request head and framed body: kept to replay once on a stale connection
        self.response = response
        self.is_head = is_head
        self.on_done = on_done
        self.task: asyncio.Task | None = None

    def _failed(self, error: BaseException) -> None:
        """The connection failed the request (a success goes straight to ``on_done``)."""
        self.conn = None
        if isinstance(error, _StaleConnection) and self.task is None and not self.response.started:
            self.task = self.pool._loop.create_task(self._replay())
            return
        if isinstance(error, _StaleConnection):
            error = UpstreamError(str(error))
        self.on_done(error)

    async def _replay(self) -> None:
        try:
            conn = self.pool._checkout() or await self.pool._connect()
        except UpstreamConnectError as exc:
            self.on_done(exc)
            return
        self.conn = conn
        conn.begin(self.response, self.is_head, True, self.on_done, self)
        conn.transport.write(self.head)

    def cancel(self) -> None:
        conn = self.conn
        if conn is not None:
            self.conn = None
            if conn._replay is self:  # not finished yet (a finished exchange left the connection to the pool)
                conn.cancel_exchange()
        if self.task is not None:
            self.task.cancel()


class UpstreamPool:
    """Connections to one upstream; see the module docstring."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        max_idle: int = 100,
        idle_timeout: float = 4.0,
        connect_timeout: float = 5.0,
        forwarded_for: bool = True,
    ) -> None:
        self.host = host
        self.port = port
        self.address = f"{host}:{port}"
        self.max_idle = max_idle
        self.idle_timeout = idle_timeout
        self.connect_timeout = connect_timeout
        self.forwarded_for = forwarded_for
        self._host_header = self.address.encode()
        self._idle: list[_Connection] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._skip: dict[frozenset[bytes], frozenset[bytes]] = {}  # drop_headers -> all names not copied
        self._plain_head = b""  # the last response head judged by the fast path, and its verdict
        self._plain_verdict: tuple[int, int] | None = None

    # -- pool ------------------------------------------------------------------------------
    def _checkout(self) -> _Connection | None:
        idle = self._idle
        if not idle:
            return None
        now = time.monotonic()
        while idle:
            conn = idle.pop()
            if conn.closed:
                continue
            if now - conn.last_used > self.idle_timeout:
                conn.abort()
                continue
            return conn
        return None

    def _forget(self, conn: _Connection) -> None:
        if conn in self._idle:
            self._idle.remove(conn)

    async def _connect(self) -> _Connection:
        loop = self._loop
        try:
            _, conn = await asyncio.wait_for(
                loop.create_connection(lambda: _Connection(self), self.host, self.port), self.connect_timeout
            )
        except (OSError, TimeoutError) as exc:
            reason = "connect timeout" if isinstance(exc, TimeoutError) else (exc.strerror or str(exc))
            raise UpstreamConnectError(f"cannot connect to upstream {self.address}: {reason}") from exc
        return conn

    @property
    def idle_connections(self) -> int:
        return len(self._idle)

    def close(self) -> None:
        for conn in self._idle:
            conn.abort()
        self._idle.clear()

    # -- requests --------------------------------------------------------------------------
    def _head(
        self,
        request: Request,
        host: bytes | None,
        add_headers: Iterable[tuple[bytes, bytes]],
        drop_headers: frozenset[bytes],
    ) -> bytes:
        skip = self._skip.get(drop_headers)
        if skip is None:
            skip = self._skip[drop_headers] = REQUEST_DROP | drop_headers | {b"host", b"x-forwarded-for"}
        headers = request.headers
        index = request.index
        lines = [b"%s %s HTTP/1.1" % (request.method, request.target)]
        for header in headers:  # a loop and a join: about half the time of formatting each line
            if header[0] not in skip:
                lines.append(b": ".join(header))
        if host is None:
            host = index.get(b"host")
        if host is not None:
            lines.append(b"host: " + host)
        if self.forwarded_for and request.client:
            client = request.client.encode()
            if b"x-forwarded-for" in index:
                client = b", ".join([*(v for n, v in headers if n == b"x-forwarded-for"), client])
            lines.append(b"x-forwarded-for: " + client)
        elif b"x-forwarded-for" in index:
            lines += [b"x-forwarded-for: " + v for n, v in headers if n == b"x-forwarded-for"]
        for header in add_headers:
            lines.append(b": ".join(header))
        if request.body.chunked:
            lines.append(b"transfer-encoding: chunked")
        connection = index.get(b"connection")
        if connection is not None:  # headers named in Connection are hop-by-hop too
            named = {token.strip().lower() for token in connection.split(b",")} - {b"close", b"keep-alive"}
            if named:
                lines = [line for line in lines if line.partition(b":")[0] not in named]
        lines.append(b"\r\n")
        return b"\r\n".join(lines)

    def dispatch(
        self,
        request: Request,
        response: Response,
        on_done: Callable[[int | BaseException], None],
        *,
        host: bytes | None = None,
        add_headers: Iterable[tuple[bytes, bytes]] = (),
        drop_headers: frozenset[bytes] = _NO_DROP,
    ) -> Dispatched | None:
        """``forward`` without a coroutine, when it can start at once: an idle pooled connection and
        the whole request body in hand. Returns None otherwise (then ``await forward(...)``).
        ``on_done`` later gets the status or the error (``UpstreamError``); it is never called
        after ``cancel()``. A stale pooled connection is replayed once, as in ``forward``.
        """
        body = request.body
        if not body.complete or not self._idle:
            return None
        conn = self._checkout()
        if conn is None:
            return None
        head = self._head(request, host, add_headers, drop_headers)
        if body._size or body.chunked:
            head += _frame(body.take_buffered(), body.chunked)
        dispatched = Dispatched(self, conn, head, response, request.method == b"HEAD", on_done)
        conn.begin(response, dispatched.is_head, True, on_done, dispatched)
        conn.transport.write(head)
        return dispatched

    async def forward(
        self,
        request: Request,
        response: Response | BufferedResponse,
        *,
        host: bytes | None = None,
        add_headers: Iterable[tuple[bytes, bytes]] = (),
        drop_headers: frozenset[bytes] = _NO_DROP,
    ) -> int:
        """Send ``request`` upstream and stream the answer into ``response``; returns the status."""
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        head = self._head(request, host, add_headers, drop_headers)
        body = request.body
        payload = None
        is_head = request.method == b"HEAD"
        retried = False
        while True:
            conn = self._checkout()
            reused = conn is not None
            if conn is None:
                conn = await self._connect()
            if payload is None and body.complete:  # taken once connected: a refused request keeps its body
                payload = _frame(body.take_buffered(), body.chunked)
            future = self._loop.create_future()
            conn.begin(response, is_head, payload is not None, _settle(future))
            pump = None
            if payload is not None:
                conn.transport.write(head + payload if payload else head)
            else:
                pump = self._loop.create_task(conn.pump(head, body))
            try:
                return await future
            except _StaleConnection:
                if reused and payload is not None and not retried and not response.started:
                    retried = True
                    continue
                raise UpstreamError(
                    f"upstream {self.address} closed the connection before responding"
                ) from None
            except BaseException:
                conn.abort()
                response.link_flow(None)
                raise
            finally:
                if pump is not None and not pump.done():
                    pump.cancel()

    async def request(
        self,
        method: bytes,
        target: bytes,
        headers: Iterable[tuple[bytes, bytes]] = (),
        body: bytes = b"",
    ) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        """A small buffered request (probes, admin calls); returns status, headers and body."""
        hdrs = [(b"host", self._host_header), *((n.lower(), v) for n, v in headers)]
        if body or method in (b"POST", b"PUT", b"PATCH"):
            hdrs.append((b"content-length", b"%d" % len(body)))
        request_body = RequestBody(None, len(body), False)
        if body:
            request_body._chunks.append(body)
            request_body._size = len(body)
        sink = BufferedResponse()
        status = await self.forward(Request(method, target, hdrs, "1.1", True, "", request_body), sink)
        return status, sink.headers, sink.body
