"""Responses: the one interface a forwarded answer is written through, and its implementations.

``ResponseSink`` is what ``UpstreamPool`` writes an upstream's answer into. Three classes implement
it: ``Response`` (the server's, on a client connection), ``BufferedResponse`` (kept whole, for
``UpstreamPool.request``) and ``WithHeader`` (a ``Response`` that adds one header, such as the
activator's cold-start header); tests/unit/test_engine_interfaces.py holds them to the interface.
``answer_failure`` is the one way a proxy tells its client that a request failed.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from http import HTTPStatus
from typing import Protocol

from httpengine.request import Request

_STATUS_LINES: dict[int, bytes] = {
    s.value: b"HTTP/1.1 %d %s\r\n" % (s.value, s.phrase.encode()) for s in HTTPStatus
}
_NO_BODY_STATUSES = frozenset({204, 304})
_CHUNK_END = b"0\r\n\r\n"
_COPY_LIMIT = 64 * 1024  # bodies below this are joined to their head and leave in one send


def status_line(status: int) -> bytes:
    line = _STATUS_LINES.get(status)
    if line is None:
        line = _STATUS_LINES[status] = b"HTTP/1.1 %d Status\r\n" % status
    return line


def plain_answer(status: int, message: str, extra_headers: bytes = b"") -> bytes:
    """A complete text response that closes the connection (refusals the engine answers itself)."""
    body = (message + "\n").encode()
    return status_line(status) + (
        b"content-type: text/plain; charset=utf-8\r\ncontent-length: %d\r\n%bconnection: close\r\n\r\n%b"
        % (len(body), extra_headers, body)
    )


class ResponseSink(Protocol):
    """Where a forwarded answer goes: what ``UpstreamPool`` needs from a response."""

    @property
    def started(self) -> bool: ...

    @property
    def finished(self) -> bool: ...

    @property
    def accepts_raw(self) -> bool:
        """Whether an upstream's fixed-length head may be passed through as is (``start_raw``)."""

    def start(
        self, status: int, headers: Iterable[tuple[bytes, bytes]] = (), content_length: int | None = None
    ) -> None: ...

    def start_raw(self, status: int, head: bytes) -> None: ...

    def write(self, data: bytes) -> None: ...

    def flush(self) -> None: ...

    def end(self, data: bytes = b"") -> None: ...

    def abort(self) -> None: ...

    def retract(self) -> bool: ...

    def link_flow(self, transport: asyncio.ReadTransport | None) -> None: ...


class Channel(Protocol):
    """What a ``Response`` needs from the client connection it writes on."""

    http11: bool
    closed: bool
    transport: asyncio.Transport

    def response_done(self, response: Response) -> None:
        """The response is complete: run the next request, or close."""

    def abort_response(self) -> None:
        """The response failed after its head went out: drop the connection."""

    async def drained(self) -> None:
        """Return once the client reads again."""

    def link_flow(self, transport: asyncio.ReadTransport | None) -> None:
        """Pause ``transport``'s reading whenever the client stops reading (None unlinks)."""


class Response:
    """Writes one response on a connection; see httpengine/server.py's docstring for the protocol."""

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

    def __init__(self, conn: Channel, request: Request) -> None:
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
            if not conn.closed:
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
            elif not conn.closed:  # a large body leaves beside its head instead of being copied into it
                conn.transport.write(self._pending)
            self._pending = None
        self.finished = True
        if data:
            self.last_write = time.monotonic()
            if not conn.closed:
                conn.transport.write(data)
        conn.response_done(self)

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
        self._conn.abort_response()

    async def drain(self) -> None:
        await self._conn.drained()

    def link_flow(self, transport: asyncio.ReadTransport | None) -> None:
        """Pause ``transport``'s reading whenever this client stops reading (None unlinks)."""
        self._conn.link_flow(transport)


def answer_failure(
    response: Response,
    status: int,
    message: str,
    *,
    close: bool = True,
    headers: Iterable[tuple[bytes, bytes]] = (),
) -> int:
    """Tell the client its request failed; returns ``status``.

    Before any of the answer went out, the client gets ``status`` with ``message`` and ``headers``
    (such as ``Retry-After``; and, with ``close``, the connection ends after it); once part of an
    answer is out, only a dropped connection can tell the client the answer is broken, so that is what
    it gets.
    """
    if response.started:
        if not response.finished:
            response.abort()
    else:
        if close:
            response.keep_alive = False
        response.send(status, (message + "\n").encode(), headers)
    return status


class BufferedResponse:
    """A response sink that keeps the whole (small) response; used by ``UpstreamPool.request``."""

    accepts_raw = False

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

    def start_raw(self, status: int, head: bytes) -> None:
        raise NotImplementedError("buffered responses are parsed, never passed through raw")

    def write(self, data: bytes) -> None:
        self._parts.append(data)

    def flush(self) -> None:
        pass

    def end(self, data: bytes = b"") -> None:
        self._parts.append(data)
        self.finished = True

    def abort(self) -> None:
        self.finished = True

    def retract(self) -> bool:
        if not self.finished:
            self.started = False
            self.status = 0
            self.headers = []
            self._parts = []
        return not self.started

    def link_flow(self, transport: asyncio.ReadTransport | None) -> None:
        pass

    @property
    def body(self) -> bytes:
        return b"".join(self._parts)


class HeaderLine:
    """One response header, made once: the pair ``start`` takes and the line ``start_raw`` splices in."""

    __slots__ = ("line", "pair")

    def __init__(self, name: bytes, value: bytes) -> None:
        self.pair = (name, value)
        self.line = b"%s: %s\r\n" % self.pair


class WithHeader:
    """Forwards an upstream's answer to ``inner``, adding one header to its head."""

    __slots__ = ("_header", "_inner")

    def __init__(self, inner: Response, header: HeaderLine) -> None:
        self._inner = inner
        self._header = header

    @property
    def started(self) -> bool:
        return self._inner.started

    @property
    def finished(self) -> bool:
        return self._inner.finished

    @property
    def accepts_raw(self) -> bool:
        return self._inner.accepts_raw

    def start(
        self, status: int, headers: Iterable[tuple[bytes, bytes]] = (), content_length: int | None = None
    ) -> None:
        self._inner.start(status, [*headers, self._header.pair], content_length)

    def start_raw(self, status: int, head: bytes) -> None:
        # ``head`` is a complete head ending in an empty line: add ours just before it.
        self._inner.start_raw(status, head[:-2] + self._header.line + b"\r\n")

    def write(self, data: bytes) -> None:
        self._inner.write(data)

    def flush(self) -> None:
        self._inner.flush()

    def end(self, data: bytes = b"") -> None:
        self._inner.end(data)

    def abort(self) -> None:
        self._inner.abort()

    def retract(self) -> bool:
        return self._inner.retract()

    def link_flow(self, transport: asyncio.ReadTransport | None) -> None:
        self._inner.link_flow(transport)
