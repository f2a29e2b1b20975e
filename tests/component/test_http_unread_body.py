"""A request answered before its body was all read (an app that answers first, a refusal by the
queue-proxy) leaves the rest of the body on the connection. The client saw a keep-alive answer and
may send its next request at once, so the server reads and drops what is left — within a bound —
instead of closing under it. Closing was a lost request: the activator's next request on that pooled
connection, with a body still streaming in from its client, could not be replayed (502 "closed the
connection before responding", 2 runs in 15 of a cold start under load)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest
from queueproxy_fixtures import UserContainer, forwarding, run

from httpengine.limits import Limits
from httpengine.request import DRAIN_MAX_BYTES, Request
from httpengine.response import Response
from httpengine.server import HttpServer

pytestmark = pytest.mark.timeout(30)


def _answer_at_once(request: Request, response: Response) -> None:
    response.send(200, b"answered " + request.target)


@contextlib.asynccontextmanager
async def impatient_server(limits: Limits | None = None) -> AsyncIterator[int]:
    server = HttpServer(_answer_at_once, limits=limits)
    _, port = await server.start("127.0.0.1", 0)
    try:
        yield port
    finally:
        server.stop_accepting()
        await server.shutdown(1.0)


async def _response(reader: asyncio.StreamReader) -> bytes:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    lines = head.lower().split(b"\r\n")
    length = int(next(line for line in lines if line.startswith(b"content-length:"))[15:])
    return head + await asyncio.wait_for(reader.readexactly(length), 5)


async def _post_then_reuse(port: int, declared: int) -> tuple[bytes, bytes]:
    """POST with ``declared`` body bytes sent only after the answer came, then a GET on the same
    connection; returns both answers (b"" for one that never came)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"POST /first HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n" % declared)
        first = await _response(reader)
        writer.write(b"x" * declared + b"GET /second HTTP/1.1\r\nHost: a\r\n\r\n")
        try:
            second = await _response(reader)
        except (asyncio.IncompleteReadError, ConnectionResetError):
            second = b""
        return first, second
    finally:
        writer.close()


@pytest.mark.parametrize("declared", [1, 10, 64 * 1024, DRAIN_MAX_BYTES])
def test_the_unread_rest_of_a_small_body_is_dropped_and_the_connection_serves_the_next_request(declared):
    async def body():
        async with impatient_server() as port:
            first, second = await _post_then_reuse(port, declared)
            assert first.startswith(b"HTTP/1.1 200") and first.endswith(b"answered /first")
            assert b"connection: close" not in first.lower()
            assert second.startswith(b"HTTP/1.1 200") and second.endswith(b"answered /second")

    run(body)


def test_a_body_too_large_to_drain_closes_the_connection_after_the_answer():
    async def body():
        async with impatient_server() as port:
            first, second = await _post_then_reuse(port, DRAIN_MAX_BYTES + 1)
            assert first.endswith(b"answered /first") and second == b""

    run(body)


def test_a_client_that_never_sends_the_rest_is_closed_after_the_body_timeout():
    async def body():
        async with impatient_server(Limits(body_timeout=1.0)) as port:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"POST /first HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\nabc")
            assert (await _response(reader)).endswith(b"answered /first")
            assert await asyncio.wait_for(reader.read(), 5) == b""  # closed, not held forever
            writer.close()

    run(body)


def test_through_a_proxy_whose_app_answers_first_every_request_on_the_connection_is_answered():
    """The queue-proxy's case: the app answers before reading; the proxy's client reuses its
    connection with the next request's body following its head, 50 times in a row."""

    async def body():
        async with UserContainer() as user, forwarding(user.port) as (port, _):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            try:
                for i in range(50):
                    writer.write(b"POST /sleep?s=0 HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\n")
                    await writer.drain()
                    await asyncio.sleep(0.002 if i % 2 else 0)  # the body after the head, or with it
                    writer.write(b"{}")
                    answer = await _response(reader)
                    assert answer.startswith(b"HTTP/1.1 200"), (i, answer[:100])
            finally:
                writer.close()

    run(body)
