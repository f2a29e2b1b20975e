"""The HTTP engine's server side on real loopback sockets, through a forwarding pool: framing,
streaming, pipelining, bad input, and how an upstream's answer is framed again for the client.

Failures of the upstream itself (stale, reset, refused, broken framing) are in
test_http_engine_upstream.py.
"""

from __future__ import annotations

import asyncio

import pytest
from queueproxy_fixtures import UserContainer, forwarding, raw_exchange, run

from httpengine.request import Request
from httpengine.response import Response
from httpengine.server import HttpServer

pytestmark = pytest.mark.timeout(30)


def test_pipelined_requests_are_answered_in_order_on_one_connection():
    async def body():
        async with UserContainer() as user, forwarding(user.port) as (port, _):
            requests = (
                b"GET /sleep?s=0.1 HTTP/1.1\r\nHost: a\r\n\r\n"
                b"GET /stream?n=2&gap=0.01 HTTP/1.1\r\nHost: a\r\n\r\n"
                b"GET /last HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
            )
            data = await raw_exchange(port, requests)
            assert data.count(b"HTTP/1.1 200 OK") == 3
            first, second, third = data.index(b"slept"), data.index(b"part1"), data.index(b"\r\n\r\nok")
            assert first < second < third
            assert user.max_in_flight == 1  # one at a time, as the client sent them

    run(body)


def test_bad_request_line_gets_400_and_other_connections_keep_working():
    async def body():
        async with UserContainer() as user, forwarding(user.port) as (port, _):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)  # a healthy keep-alive client
            writer.write(b"GET /a HTTP/1.1\r\nHost: a\r\n\r\n")
            assert b"200 OK" in await reader.readuntil(b"ok")
            bad = await raw_exchange(port, b"THIS IS NOT HTTP\r\n\r\n")
            assert bad.startswith(b"HTTP/1.1 400 Bad Request")
            assert b"connection: close" in bad
            writer.write(b"GET /b HTTP/1.1\r\nHost: a\r\n\r\n")
            assert b"200 OK" in await reader.readuntil(b"ok")
            writer.close()

    run(body)


@pytest.mark.parametrize(
    ("head", "status"),
    [
        (b"GET / HTTP/1.1\r\nHost: a\r\nX-Big: " + b"x" * 20000 + b"\r\n\r\n", b"431"),  # one huge header
        (b"GET /" + b"p" * 20000 + b" HTTP/1.1\r\nHost: a\r\n\r\n", b"414"),  # a huge request line
        (b"GET / HTTP/1.1\r\n" + b"".join(b"X-%d: y\r\n" % i for i in range(150)) + b"\r\n", b"431"),
    ],
    ids=["huge-header", "huge-url", "too-many-headers"],
)
def test_oversized_request_heads_are_refused_without_harming_other_connections(head, status):
    async def body():
        async with UserContainer() as user, forwarding(user.port) as (port, _):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            answer = await raw_exchange(port, head)
            assert answer.startswith(b"HTTP/1.1 " + status + b" ")
            writer.write(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
            assert b"200 OK" in await reader.readuntil(b"ok")
            writer.close()
            assert user.served == 1  # the oversized request never reached the user container

    run(body)


def test_head_only_sent_in_pieces_still_parses():
    async def body():
        async with UserContainer() as user, forwarding(user.port) as (port, _):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            for piece in (b"GE", b"T /hea", b"ders HTTP/1.1\r\nHo", b"st: pieces\r\n", b"\r\n"):
                writer.write(piece)
                await writer.drain()
                await asyncio.sleep(0.01)  # each piece on its own: the parser sees them apart
            assert b'"host": "pieces"' in await reader.readuntil(b"}")
            writer.close()

    run(body)


def test_chunked_request_and_response_bodies_stream_through():
    """The user container echoes each chunk as it arrives; the client reads it before sending more."""

    async def body():
        async with UserContainer() as user, forwarding(user.port) as (port, _):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n")
            head = await reader.readuntil(b"\r\n\r\n")
            assert b"transfer-encoding: chunked" in head.lower()
            for word in (b"first", b"second", b"third"):
                writer.write(b"%x\r\n%s\r\n" % (len(word), word))
                await writer.drain()
                # The echo comes back while the request body is still open: nothing is buffered whole.
                size_line = await asyncio.wait_for(reader.readuntil(b"\r\n"), 2)
                assert int(size_line, 16) == len(word)
                assert await reader.readexactly(len(word) + 2) == word + b"\r\n"
            writer.write(b"0\r\n\r\n")
            assert await reader.readuntil(b"0\r\n\r\n") == b"0\r\n\r\n"
            writer.close()

    run(body)


def test_large_upload_streams_with_content_length():
    async def body():
        async with UserContainer() as user, forwarding(user.port) as (port, _):
            size = 8 * 1024 * 1024
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"POST /count HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n" % size)
            block = b"z" * 65536
            for _ in range(size // len(block)):
                writer.write(block)
                await writer.drain()
            head = await reader.readuntil(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200")
            assert await reader.readexactly(len(str(size))) == str(size).encode()
            writer.close()

    run(body)


def test_expect_100_continue_is_answered_before_the_body_is_sent():
    async def body():
        async with UserContainer() as user, forwarding(user.port) as (port, _):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(
                b"POST /count HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n"
            )
            assert (
                await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 2) == b"HTTP/1.1 100 Continue\r\n\r\n"
            )
            writer.write(b"hello")
            assert b"\r\n\r\n5" in await reader.readuntil(b"5")
            writer.close()

    run(body)


def test_head_and_204_responses_carry_no_body_and_keep_the_connection_usable():
    async def body():
        async def handler(request: Request, response: Response) -> None:
            if request.path == "/empty":
                response.send(204)
            else:
                response.send(200, b"twelve bytes")

        upstream = HttpServer(handler)
        _, user_port = await upstream.start()
        try:
            async with forwarding(user_port) as (port, _):
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                heads = (b"HEAD /", b"GET /empty", b"GET /")
                writer.write(b"".join(b"%s HTTP/1.1\r\nHost: a\r\n\r\n" % line for line in heads))
                head = await reader.readuntil(b"\r\n\r\n")
                assert head.startswith(b"HTTP/1.1 200") and b"content-length: 12" in head
                assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 204")
                third = await reader.readuntil(b"twelve bytes")
                assert third.startswith(b"HTTP/1.1 200")
                writer.close()
        finally:
            await upstream.shutdown(0)

    run(body)


def test_close_delimited_upstream_response_is_rechunked_for_the_client():
    async def body():
        async def old_server(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the end")
            await writer.drain()
            writer.close()

        upstream = await asyncio.start_server(old_server, "127.0.0.1", 0)
        async with upstream, forwarding(upstream.sockets[0].getsockname()[1]) as (port, _):
            data = await raw_exchange(port, b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
            assert b"transfer-encoding: chunked" in data
            assert data.endswith(b"d\r\nuntil the end\r\n0\r\n\r\n")

    run(body)


def test_a_pooled_connection_alternating_plain_and_special_heads_frames_each_one_right():
    """The pool remembers its verdict on the last plain head: a different head must be judged anew."""
    plain = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nplain"
    answers = [
        plain,
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"7\r\nchunked\r\n0\r\n\r\n",
        plain,
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\nKeep-Alive: timeout=5\r\n\r\n"
        b"kept!",
        plain,
    ]
    expected = [b"plain", b"chunked", b"plain", b"kept!", b"plain"]

    async def body():
        connections = []

        async def one_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            connections.append(writer)
            for answer in answers:
                await reader.readuntil(b"\r\n\r\n")
                writer.write(answer)
                await writer.drain()
            writer.close()

        upstream = await asyncio.start_server(one_connection, "127.0.0.1", 0)
        async with upstream, forwarding(upstream.sockets[0].getsockname()[1]) as (port, _):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            for want in expected:  # one client connection, so the client side may take raw heads too
                writer.write(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
                head = (await reader.readuntil(b"\r\n\r\n")).lower()
                assert head.startswith(b"http/1.1 200") and b"keep-alive" not in head
                if b"transfer-encoding: chunked" in head:
                    got = (await reader.readuntil(b"0\r\n\r\n")).split(b"\r\n")[1]
                else:
                    assert head.count(b"content-length: 5\r\n") == 1
                    got = await reader.readexactly(5)
                assert got == want
            assert len(connections) == 1
            writer.close()

    run(body)


def test_hop_by_hop_headers_are_not_forwarded():
    async def body():
        async with UserContainer() as user, forwarding(user.port) as (port, _):
            await raw_exchange(
                port,
                b"GET /headers HTTP/1.1\r\nHost: a\r\nConnection: close, X-Secret\r\nX-Secret: s\r\n"
                b"Keep-Alive: timeout=5\r\nTE: trailers\r\nX-Kept: yes\r\n\r\n",
            )
            seen = user.seen_headers[-1]
            assert seen["x-kept"] == "yes"
            assert not {"connection", "keep-alive", "te", "x-secret"} & set(seen)
            assert seen["x-forwarded-for"] == "127.0.0.1"

    run(body)
