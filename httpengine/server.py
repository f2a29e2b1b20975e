"""A small, fast HTTP/1.1 server: an asyncio Protocol driving httptools, one per listening address.

Why not uvicorn or a framework: the queue-proxy and the activator sit on the hot path of every
request, and every microsecond of Python there is paid twice (once per hop). This engine does only
what a proxy needs — parse, stream, frame — and hands each request to a handler.

API (shared by every server of ours; keep it stable)::

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

``Request`` (httpengine/request.py): ``method`` (bytes, e.g. b"GET"), ``target`` (raw request-target
bytes, path and query), ``path`` (str, no query), ``headers`` (list of ``(name, value)`` bytes, names
lower-cased, in arrival order), ``index`` (dict: lower-case name -> first value), ``header(name)``
(the same lookup), ``http_version`` ("1.1"), ``keep_alive``, ``client`` (peer "ip" string) and
``body`` (a ``RequestBody``).

``RequestBody``: ``await body.read()`` returns the next chunk, ``b""`` at the end; ``await
body.read_all(limit)``; ``complete`` is True once the whole body has arrived; ``chunked`` and
``content_length`` describe the client's framing; ``take_buffered()`` pops what has arrived so far.
Chunks are streamed, never buffered whole: past ``Limits.body_buffer`` bytes the connection stops
reading from the client until the handler catches up. ``Expect: 100-continue`` is answered when the
handler first waits for body bytes. If the client disconnects mid-body, ``read`` raises
``ClientDisconnected``.

``Response`` (httpengine/response.py): ``start(status, headers, content_length=None)`` queues the head
(headers are ``(name, value)`` bytes pairs without framing headers: no Content-Length,
Transfer-Encoding or Connection); the body is chunked when the length is unknown (close-delimited for
HTTP/1.0 clients). ``write(data)`` sends a chunk (together with the queued head, so a small response
is one send), ``flush()`` sends a queued head alone, ``end(data=b"")`` finishes the response,
``send(status, body, headers, content_type)`` does all three, ``abort()`` drops the connection (for
failures after the head went out). ``await drain()`` waits while the client is not reading;
``link_flow(transport)`` pauses and resumes another transport's reading with this client's write
buffer (a proxy's backpressure). ``retract()`` takes back a queued head that has not been sent (False
once bytes went out). ``started``, ``finished``, ``status`` and ``last_write`` (monotonic seconds)
describe progress. ``on_abort`` (a callable, default None) is called if the client goes away before
the response is finished. ``accepts_raw``/``start_raw(status, head)`` let a proxy pass an upstream's
complete, fixed-length head through unchanged.

Connections (httpengine/connection.py) are persistent and pipelining-safe: a pipelined request waits
until the previous response is finished. Malformed requests get 400; a request past one of the
server's ``Limits`` gets 414, 431, 413 or 408 and a connection past its connection cap 503 (each
closes that connection; the table is in docs/wire-contracts.md, "HTTP limits"); other connections are
not affected. A handler that raises gets 500 (or an aborted connection if its response had started);
an async handler that returns without finishing its response has it finished. If the client goes
away (closes or half-closes its connection), the handler's task is cancelled. A body that turns
malformed or too large while its request runs ends that request (the handler is told the client
left; the client gets 400 or 413). No protocol switching: an upgrade request (or CONNECT) is served
as a plain request and the connection closes after it; one with a body is answered 400.
"""

from __future__ import annotations

import asyncio
import logging
import time

from httpengine.connection import Handler, ServerConnection
from httpengine.limits import Limits, default_max_connections

log = logging.getLogger(__name__)

MAX_LINGERING = 64  # refused connections lingering at once per server; more are closed at once


class HttpServer:
    """Listens on one address and runs ``handler`` for each request; see the module docstring."""

    def __init__(self, handler: Handler, *, limits: Limits | None = None, name: str = "http") -> None:
        self.handler = handler
        self.limits = limits or Limits()
        self.name = name
        self.max_connections = self.limits.max_connections or default_max_connections()
        self._connections: set[ServerConnection] = set()
        self._lingering = 0  # refused connections still draining (see ServerConnection._linger)
        self._refused = 0  # connections refused at the cap, in all
        self._cap_logged = -10.0
        self._server: asyncio.AbstractServer | None = None
        self._sweeper: asyncio.TimerHandle | None = None
        self.host = ""
        self.port = 0

    async def start(self, host: str = "127.0.0.1", port: int = 0, *, backlog: int = 2048) -> tuple[str, int]:
        """Bind and start accepting; returns the bound address (the real port when ``port`` is 0)."""
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: ServerConnection(self), host, port, backlog=backlog, reuse_address=True
        )
        sockname = self._server.sockets[0].getsockname()
        self.host, self.port = sockname[0], sockname[1]
        self._sweeper = loop.call_later(1.0, self._sweep, loop)
        return self.host, self.port

    def _sweep(self, loop: asyncio.AbstractEventLoop) -> None:
        now = time.monotonic()
        for conn in list(self._connections):
            conn.check_timeouts(now)
        self._sweeper = loop.call_later(1.0, self._sweep, loop)

    # -- what its connections ask of it (connection.Listener) -----------------------------------
    def admit(self, conn: ServerConnection) -> str | None:
        """Count ``conn`` as served, or refuse it at the connection cap: the message of its 503."""
        if len(self._connections) >= self.max_connections:
            self._note_refusal()
            return f"{self.name}: at its cap of {self.max_connections} connections; retry shortly"
        self._connections.add(conn)
        return None

    def forget(self, conn: ServerConnection) -> None:
        self._connections.discard(conn)

    def may_linger(self) -> bool:
        return self._lingering < MAX_LINGERING

    def linger_began(self) -> None:
        self._lingering += 1

    def linger_ended(self) -> None:
        self._lingering -= 1

    def _note_refusal(self) -> None:
        self._refused += 1
        now = time.monotonic()
        if now - self._cap_logged >= 10.0:
            self._cap_logged = now
            log.warning(
                "%s: at its cap of %d connections; refusing new ones with 503 (%d so far)",
                self.name, self.max_connections, self._refused,
            )  # fmt: skip

    # -- stopping ---------------------------------------------------------------------------------
    def stop_accepting(self) -> None:
        if self._server is not None:
            self._server.close()

    async def shutdown(self, grace: float = 30.0) -> None:
        """Stop accepting, close idle connections, give in-flight requests ``grace`` seconds, close.

        Safe on a server that never started (it returns at once)."""
        self.stop_accepting()
        deadline = time.monotonic() + grace
        while True:
            for conn in list(self._connections):
                if not conn.close_if_idle():
                    conn.close_after_response()
            if not self._connections or time.monotonic() >= deadline:
                break
            await asyncio.sleep(0.02)
        for conn in list(self._connections):
            conn.abort()
        if self._sweeper is not None:
            self._sweeper.cancel()
        if self._server is not None:
            await self._server.wait_closed()
