"""One pooled keep-alive connection to an upstream, carrying one exchange at a time for ``UpstreamPool``.

It sends a request (at once, or ``pump``ing a body still arriving from the client) and streams the
response into a ``ResponseSink``: a plain fixed-length head is passed through unparsed (the fast
path; see httpengine/head.py), anything else goes through httptools and is re-framed. It tells its
pool, through ``on_done``, the status once the response is complete or the error that ended it, and
puts itself back in the pool (``Pool.check_in``) when it can carry another exchange.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Protocol

import httptools

from httpengine.errors import ClientDisconnected, StaleConnection, UpstreamError
from httpengine.flow import FlowControlled
from httpengine.head import MAX_RAW_HEAD, HeadMemo
from httpengine.request import RequestBody
from httpengine.response import ResponseSink

log = logging.getLogger(__name__)

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


class Pool(Protocol):
    """What a connection needs from the pool it belongs to (``UpstreamPool``)."""

    address: str
    heads: HeadMemo

    def check_in(self, conn: UpstreamConnection) -> bool:
        """Take ``conn`` back as idle after a complete exchange; False if the pool is full."""

    def forget(self, conn: UpstreamConnection) -> None:
        """``conn`` closed."""


class Replay(Protocol):
    """An exchange that a stale pooled connection may have to send again (``Dispatched``)."""

    def failed(self, error: BaseException) -> None:
        """The connection failed the exchange: replay it, or report ``error``."""


class _Excess(Exception):
    """Raised from the parser's callbacks: a second message began after the response was complete."""


class UpstreamConnection(FlowControlled):
    """One pooled upstream connection carrying one exchange at a time."""

    __slots__ = (
        "_body_parts",
        "_buffer",
        "_close_delimited",
        "_complete",
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
        "last_used",
        "parser",
        "pool",
        "transport",
    )

    transport: asyncio.Transport  # set by connection_made, which asyncio calls before any other method

    def __init__(self, pool: Pool) -> None:
        super().__init__()
        self.pool = pool
        self.parser = httptools.HttpResponseParser(self)
        self.last_used = 0.0
        self._response: ResponseSink | None = None
        self._on_done: Callable[[int | BaseException], None] | None = None
        self._replay: Replay | None = None
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
        response: ResponseSink,
        is_head: bool,
        request_sent: bool,
        on_done: Callable[[int | BaseException], None],
        replay: Replay | None = None,
    ) -> None:
        """Start an exchange; ``on_done`` gets the status when the response is complete, or the error
        (``replay``'s judgement of it, when given: a stale pooled connection is tried again)."""
        self._response = response
        self._is_head = is_head
        self._request_sent = request_sent
        self._on_done = on_done
        self._replay = replay
        response.link_flow(self.transport)

    def abandon(self, replay: Replay) -> None:
        """``replay``'s owner gave up: drop its exchange unreported and close the connection, unless the
        exchange is over (a finished exchange left the connection to the pool)."""
        if self._replay is replay:
            self._response = self._on_done = self._replay = None
            self.abort()

    async def pump(self, head: bytes, body: RequestBody) -> None:
        """Send a head and then a body that is still arriving from the client."""
        transport = self.transport
        if self.closed:  # reset before this task ran: connection_lost has failed the exchange already
            return
        transport.write(head)
        chunked = body.chunked
        try:
            while chunk := await body.read():
                if self.closed:
                    return
                transport.write(b"%x\r\n%b\r\n" % (len(chunk), chunk) if chunked else chunk)
                if self._write_paused:
                    await self.drained()
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
        if not (reusable and self.pool.check_in(self)):
            self.abort()
        if on_done is not None:
            on_done(status)

    def _fail(self, exc: BaseException) -> None:
        on_done = self._on_done if self._replay is None else self._replay.failed
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
        # typeshed gives every protocol a BaseTransport; a stream connection's is always a Transport.
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
            if end < 0 and len(buffered) < MAX_RAW_HEAD:
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

    def _raw_head(self, response: ResponseSink, data: bytes, head_end: int) -> bool:
        """The fast path: pass a plain fixed-length response head through as it came.

        Saves parsing each header and re-serializing them; the pool's ``HeadMemo`` makes a repeated
        head cost one bytes comparison.
        """
        head = data[:head_end]
        verdict = self.pool.heads.judge(head)
        if verdict is None:
            return False
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

    def _raw_body(self, response: ResponseSink, data: bytes) -> None:
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

    def _deliver(self, response: ResponseSink) -> None:
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
        self.pool.forget(self)
        self._wake_drain()
        response = self._response
        if response is None:
            return
        if self._close_delimited and self._raw_left < 0:
            self._complete = True
            self._deliver(response)
        elif not self._got_bytes:
            self._fail(
                StaleConnection(f"upstream {self.pool.address} closed the connection before responding")
            )
        else:
            self._fail(UpstreamError(f"upstream {self.pool.address} closed the connection mid-response"))

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
        response = self._response
        assert response is not None  # the parser runs only in data_received, during an exchange
        response.start(status, out, length)
        self._started_now = True

    def on_body(self, chunk: bytes) -> None:
        self._body_parts.append(chunk)

    def on_message_complete(self) -> None:
        if self._interim:
            self._interim = False
        else:
            self._complete = True
