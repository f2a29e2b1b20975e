"""Keep-alive HTTP/1.1 client pool to one upstream ``host:port``, made to forward server requests.

The queue-proxy forwards to its user container and the activator to a pod's queue-proxy through
this pool; both need the same three things from it: stream bodies both ways with backpressure,
reuse connections, and say precisely what failed.

API (shared by the queue-proxy, the activator, ``kpa up``'s entry and ``kpa load``; keep it stable)::

    pool = UpstreamPool("127.0.0.1", 8080, max_idle=100)
    status = await pool.forward(request, response,            # a server's Request, a ResponseSink
                                host=None,                    # replace the Host header
                                add_headers=((b"k-proxy-request", b"activator"),),
                                drop_headers=frozenset({b"knative-serving-revision"}))
    status, headers, body = await pool.request(b"GET", b"/healthz", headers=((b"k-network-probe", b"queue"),))
    dispatched = pool.dispatch(request, response, on_done, host=..., drop_headers=...)  # no coroutine
    prepared = pool.prepare(b"GET", b"/", headers=(), body=b"", host=b"rev.example")   # made once...
    status = await pool.send(prepared, sink)                                            # ...sent often
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
the client, so neither body is ever held whole. ``prepare`` and ``send`` are the client side for
requests of our own (probes, admin calls, ``kpa load``): the request's bytes are made once, and the
answer goes into any ``ResponseSink`` (``request`` keeps it whole in a ``BufferedResponse``).

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
import time
from collections.abc import Callable, Iterable
from typing import NamedTuple

from httpengine.errors import StaleConnection, UpstreamConnectError, UpstreamError
from httpengine.head import HeadMemo
from httpengine.request import Request
from httpengine.response import BufferedResponse, ResponseSink
from httpengine.upstream_connection import UpstreamConnection

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
_NO_DROP: frozenset[bytes] = frozenset()
_OWN_DROP = REQUEST_DROP | {b"host", b"content-length"}  # a prepared request's Host and framing are ours


class Prepared(NamedTuple):
    """A request of our own as it goes on the wire (``UpstreamPool.prepare``, ``send``)."""

    data: bytes  # head and body
    is_head: bool  # a HEAD request: no body follows the answer's head, whatever its length says


def _frame(data: bytes, chunked: bool) -> bytes:
    if not chunked:
        return data
    return (b"%x\r\n%b\r\n0\r\n\r\n" % (len(data), data)) if data else b"0\r\n\r\n"


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
        conn: UpstreamConnection,
        head: bytes,
        response: ResponseSink,
        is_head: bool,
        on_done: Callable[[int | BaseException], None],
    ) -> None:
        self.pool = pool
        self.conn: UpstreamConnection | None = conn
        self.head = head  # request head and framed body: kept to replay once on a stale connection
        self.response = response
        self.is_head = is_head
        self.on_done = on_done
        self.task: asyncio.Task | None = None

    def failed(self, error: BaseException) -> None:
        """The connection failed the request (a success goes straight to ``on_done``)."""
        self.conn = None
        if isinstance(error, StaleConnection) and self.task is None and not self.response.started:
            self.task = asyncio.get_running_loop().create_task(self._replay())  # called back on the loop
            return
        if isinstance(error, StaleConnection):
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
            conn.abandon(self)
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
        self.heads = HeadMemo()  # the fast path's verdicts on this upstream's response heads
        self._loop: asyncio.AbstractEventLoop | None = None
        self._idle: list[UpstreamConnection] = []
        self._skip: dict[frozenset[bytes], frozenset[bytes]] = {}  # drop_headers -> all names not copied

    # -- pool ------------------------------------------------------------------------------
    def _checkout(self) -> UpstreamConnection | None:
        idle = self._idle
        if not idle:
            return None
        now = time.monotonic()
        while idle:
            conn = idle.pop()
            if conn.closed or conn.transport.is_closing():
                continue  # closing: its connection_lost is on the way (uvloop refuses writes meanwhile)
            if now - conn.last_used > self.idle_timeout:
                conn.abort()
                continue
            return conn
        return None

    def check_in(self, conn: UpstreamConnection) -> bool:
        """Keep ``conn`` for the next request, unless ``max_idle`` connections wait already."""
        idle = self._idle
        if len(idle) < self.max_idle:
            conn.last_used = time.monotonic()
            idle.append(conn)
            return True
        return False

    def forget(self, conn: UpstreamConnection) -> None:
        if conn in self._idle:
            self._idle.remove(conn)

    async def _connect(self) -> UpstreamConnection:
        loop = self._loop or asyncio.get_running_loop()  # the pool's loop, once a request has set it
        try:
            async with asyncio.timeout(self.connect_timeout):
                _, conn = await loop.create_connection(lambda: UpstreamConnection(self), self.host, self.port)
        except (OSError, TimeoutError) as exc:
            reason = "connect timeout" if isinstance(exc, TimeoutError) else (exc.strerror or str(exc))
            raise UpstreamConnectError(f"cannot connect to upstream {self.address}: {reason}") from exc
        if conn.closed or conn.transport.is_closing():  # reset between connecting and our first write
            raise UpstreamConnectError(f"upstream {self.address} closed the connection as it opened")
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
        response: ResponseSink,
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
        if body.buffered or body.chunked:
            head += _frame(body.take_buffered(), body.chunked)
        dispatched = Dispatched(self, conn, head, response, request.method == b"HEAD", on_done)
        conn.begin(response, dispatched.is_head, True, on_done, dispatched)
        conn.transport.write(head)
        return dispatched

    async def forward(
        self,
        request: Request,
        response: ResponseSink,
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
            except BaseException as error:
                if not self._retry_fresh(
                    error, conn, response, reused and payload is not None and not retried
                ):
                    raise
                retried = True
            finally:
                if pump is not None and not pump.done():
                    pump.cancel()

    def _retry_fresh(
        self, error: BaseException, conn: UpstreamConnection, response: ResponseSink, replayable: bool
    ) -> bool:
        """What ``forward`` and ``send`` do with an exchange that failed with ``error``: True to send
        the request again on a fresh connection (a stale reused one, ``replayable``: the request in
        hand and not retried yet, and nothing of the answer gone out); else it raises ``UpstreamError``
        for a stale connection, or aborts the connection and returns False for the caller to re-raise
        ``error``. Called from ``except`` only, so the success path pays nothing for it.
        """
        if isinstance(error, StaleConnection):
            if replayable and not response.started:
                return True
            raise UpstreamError(f"upstream {self.address} closed the connection before responding") from None
        conn.abort()
        response.link_flow(None)
        return False

    def prepare(
        self,
        method: bytes,
        target: bytes,
        headers: Iterable[tuple[bytes, bytes]] = (),
        body: bytes = b"",
        *,
        host: bytes | None = None,
    ) -> Prepared:
        """A request of our own (not a client's) made into bytes once, to ``send`` as often as wanted:
        a probe or a load generator repeats one request, and need not rebuild it each time. ``host``
        replaces the Host header (default: the upstream's address), for a server that routes by it;
        hop-by-hop and framing headers in ``headers`` are dropped (the pool frames the request)."""
        lines = [b"%s %s HTTP/1.1" % (method, target), b"host: " + (host or self._host_header)]
        lines += [b"%s: %s" % (n.lower(), v) for n, v in headers if n.lower() not in _OWN_DROP]
        if body or method in (b"POST", b"PUT", b"PATCH"):
            lines.append(b"content-length: %d" % len(body))
        lines.append(b"\r\n")
        return Prepared(b"\r\n".join(lines) + body, method == b"HEAD")

    async def send(self, prepared: Prepared, response: ResponseSink) -> int:
        """Send a prepared request and stream the answer into ``response``; returns the status.

        Errors as ``forward``'s; a sink that drops the body spares holding it whole (``kpa load``).
        """
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        retried = False
        while True:
            conn = self._checkout()
            reused = conn is not None
            if conn is None:
                conn = await self._connect()
            future = self._loop.create_future()
            conn.begin(response, prepared.is_head, True, _settle(future))
            conn.transport.write(prepared.data)
            try:
                return await future
            except BaseException as error:
                if not self._retry_fresh(error, conn, response, reused and not retried):
                    raise
                retried = True

    async def request(
        self,
        method: bytes,
        target: bytes,
        headers: Iterable[tuple[bytes, bytes]] = (),
        body: bytes = b"",
    ) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        """A small buffered request (probes, admin calls); returns status, headers and body."""
        sink = BufferedResponse()
        status = await self.send(self.prepare(method, target, headers, body), sink)
        return status, sink.headers, sink.body
