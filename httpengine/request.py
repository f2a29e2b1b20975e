"""A request as the server hands it to a handler: its head, and its body as a stream of chunks."""

from __future__ import annotations

import asyncio
import zlib
from collections import deque
from collections.abc import Mapping
from typing import Protocol
from urllib.parse import unquote

from httpengine.errors import RequestRefused
from httpengine.limits import Limits

Headers = list[tuple[bytes, bytes]]


class BodySource(Protocol):
    """What a body needs from the connection that fills it: its limits and its reading switch."""

    @property
    def limits(self) -> Limits: ...

    def pause_for_body(self) -> None:
        """Stop reading from the client: the handler is behind by more than ``Limits.body_buffer``."""

    def body_drained(self) -> None:
        """The handler took body bytes: reading may resume."""

    def send_continue(self) -> None:
        """Answer ``Expect: 100-continue``: the handler waits for the body."""


class _Detached:
    """The source of a body made here rather than read from a client: complete from the start, so
    there is no reading to pause or resume and no ``100 Continue`` to owe."""

    __slots__ = ()
    limits = Limits()

    def pause_for_body(self) -> None:
        pass

    def body_drained(self) -> None:
        pass

    def send_continue(self) -> None:
        pass


_DETACHED = _Detached()


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
    """The request body as a stream of chunks, filled by the connection and drained by the handler.

    ``buffered`` is the bytes received and not yet read; ``received`` all that arrived (the body
    timeout watches it move); ``expect_continue`` says a ``100 Continue`` is owed before the first read.
    """

    __slots__ = (
        "_chunks",
        "_conn",
        "_error",
        "_waiter",
        "buffered",
        "chunked",
        "complete",
        "content_length",
        "expect_continue",
        "received",
    )

    def __init__(self, conn: BodySource | None, content_length: int | None, chunked: bool) -> None:
        self._conn: BodySource = _DETACHED if conn is None else conn
        self._chunks: deque[bytes] = deque()
        self.buffered = 0
        self._waiter: asyncio.Future[None] | None = None
        self._error: BaseException | None = None
        self.expect_continue = False
        self.content_length = content_length
        self.chunked = chunked
        self.complete = conn is None
        self.received = 0

    @classmethod
    def of(cls, data: bytes) -> RequestBody:
        """A complete body holding ``data`` (a request made here rather than read from a client)."""
        body = cls(None, len(data), False)
        if data:
            body._chunks.append(data)
            body.buffered = len(data)
        return body

    # -- fed by the connection -------------------------------------------------------------
    def feed(self, chunk: bytes) -> None:
        self.received += len(chunk)
        limits = self._conn.limits
        if self.chunked and self.received > limits.max_body_bytes:  # a declared length was checked before
            raise RequestRefused(413, f"request body larger than {limits.max_body_bytes} bytes")
        self._chunks.append(chunk)
        self.buffered += len(chunk)
        if self.buffered > limits.body_buffer:
            self._conn.pause_for_body()
        self._wake()

    def finish(self) -> None:
        self.complete = True
        self._wake()

    def fail(self, exc: BaseException) -> None:
        """The body will never be complete: a waiting or later ``read`` raises ``exc``."""
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
    def take_buffered(self) -> bytes:
        """Everything received and not yet read, as one bytes object (may be empty)."""
        chunks = self._chunks
        if not chunks:
            return b""
        data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        chunks.clear()
        self.buffered = 0
        self._conn.body_drained()
        return data

    async def read(self) -> bytes:
        """The next chunk; ``b""`` once the body is complete."""
        while not self._chunks:
            if self.complete:
                return b""
            if self._error is not None:
                raise self._error
            if self.expect_continue:
                self.expect_continue = False
                self._conn.send_continue()
            self._waiter = asyncio.get_running_loop().create_future()
            await self._waiter
        chunk = self._chunks.popleft()
        self.buffered -= len(chunk)
        self._conn.body_drained()
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

def announced_body(index: Mapping[bytes, bytes], http11: bool, source: BodySource) -> RequestBody:
    """The body a request head announces (``EMPTY_BODY`` for none), filled by ``source``; a declared
    length past the limit is refused (413) before any of it is read."""
    encoding = index.get(b"transfer-encoding")
    length = index.get(b"content-length")
    if encoding is None and (length is None or length == b"0"):
        return EMPTY_BODY
    chunked = encoding is not None and b"chunked" in encoding.lower()
    declared = None if chunked else int(length or 0)
    limit = source.limits.max_body_bytes
    if declared is not None and declared > limit:
        raise RequestRefused(413, f"request body of {declared} bytes is larger than {limit} bytes")
    body = RequestBody(source, declared, chunked)
    expect = index.get(b"expect")
    body.expect_continue = http11 and expect is not None and expect.lower() == b"100-continue"
    return body


# Unread request body a finished response may leave behind and still keep its connection (Go's server
# reads up to 256 KiB for the same reason): it is read and dropped, and cut off by the body timeout.
DRAIN_MAX_BYTES = 256 * 1024


def drainable(body: RequestBody) -> bool:
    """An unread body of known, small remaining length whose client is not waiting for 100 Continue:
    its connection may be kept once the rest is read and dropped."""
    length = body.content_length
    return (
        not body.complete
        and length is not None
        and not body.expect_continue
        and length - body.received <= DRAIN_MAX_BYTES
    )


class Request:
    """A parsed request head and its body; see httpengine/server.py's docstring for the fields."""

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
