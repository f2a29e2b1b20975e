"""The HTTP engine on real loopback sockets: framing, streaming, pipelining, bad input, pooling."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest
from queueproxy_fixtures import UserContainer, free_port, raw_exchange, run
from waiting import wait_until

from httpengine.errors import UpstreamConnectError, UpstreamError
from httpengine.limits import Limits
from httpengine.request import Request
from httpengine.response import BufferedResponse, Response
from httpengine.server import HttpServer
from httpengine.upstream import UpstreamPool

pytestmark = pytest.mark.timeout(30)


@contextlib.asynccontextmanager
async def forwarding(user_port: int) -> AsyncIterator[tuple[int, UpstreamPool]]:
    """A server forwarding every request to ``user_port`` through a pool: its port and the pool, both
    closed on the way out however the test ends."""
    pool = UpstreamPool("127.0.0.1", user_port)

    async def forward(request: Request, response: Response) -> None:
        try:
            await pool.forward(request, response)
        except UpstreamError as exc:
            if not response.started:
                response.send(502, str(exc).encode())
            else:
                response.abort()

    server = HttpServer(forward, name="forwarder", limits=Limits(max_head_bytes=8192))
    try:
        _, port = await server.start("127.0.0.1", 0)
        yield port, pool
    finally:
        await server.shutdown(0)
        pool.close()


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


def test_stale_pooled_connection_is_retried_once_on_a_fresh_one():
    """Like uvicorn after 5 s idle: the upstream drops a pooled keep-alive connection just as it is reused."""

    async def body():
        connections = []

        async def one_answer_per_connection(
            reader: asyncio.StreamReader, writer: asyncio.StreamWriter
        ) -> None:
            connections.append(writer)
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            await writer.drain()
            await reader.readuntil(b"\r\n\r\n")  # the next request on this connection...
            writer.close()  # ...is dropped unanswered, as by a server that closed the idle connection

        upstream = await asyncio.start_server(one_answer_per_connection, "127.0.0.1", 0)
        pool = UpstreamPool("127.0.0.1", upstream.sockets[0].getsockname()[1])
        try:
            assert (await pool.request(b"GET", b"/"))[0] == 200
            assert pool.idle_connections == 1
            status, _, body_bytes = await pool.request(b"POST", b"/", body=b"replayed")
            assert (status, body_bytes) == (200, b"ok")
            assert len(connections) == 2
        finally:
            pool.close()
            upstream.close()

    run(body)


def test_a_connection_reset_before_the_request_is_written_is_an_upstream_error_not_a_crash():
    """A pod SIGKILLed just as the pool connects to it: the reset can land between the connect and the
    first write, and uvloop then refuses the write with RuntimeError (which the activator answered 500,
    once in the one-hour soak). It must read as the connect failing: retried elsewhere or answered 502."""

    async def body():
        async def resets(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.transport.abort()

        upstream = await asyncio.start_server(resets, "127.0.0.1", 0)
        loop = asyncio.get_running_loop()

        class ResetBeforeFirstWrite:
            """The pool's loop, except that a new connection is handed over only once the peer reset it."""

            def __getattr__(self, name: str):
                return getattr(loop, name)

            async def create_connection(self, factory, host, port):
                transport, protocol = await loop.create_connection(factory, host, port)
                await wait_until(transport.is_closing, what="the upstream's reset")
                await asyncio.sleep(0.01)  # connection_lost, scheduled at the close, has run by now
                return transport, protocol

        pool = UpstreamPool("127.0.0.1", upstream.sockets[0].getsockname()[1])
        pool._loop = ResetBeforeFirstWrite()  # the race made certain: no public way to order a reset
        try:
            with pytest.raises(UpstreamConnectError, match="closed the connection as it opened"):
                await asyncio.wait_for(pool.request(b"GET", b"/"), 2.0)
        finally:
            pool.close()
            upstream.close()

    run(body)


def test_a_fresh_connection_closed_without_an_answer_is_an_upstream_error():
    async def body():
        async def hangs_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.readuntil(b"\r\n\r\n")
            writer.close()

        upstream = await asyncio.start_server(hangs_up, "127.0.0.1", 0)
        pool = UpstreamPool("127.0.0.1", upstream.sockets[0].getsockname()[1])
        try:
            with pytest.raises(UpstreamError, match="closed the connection before responding"):
                await pool.request(b"GET", b"/")
        finally:
            pool.close()
            upstream.close()

    run(body)


def test_refused_connection_is_reported_as_a_connect_error():
    async def body():
        pool = UpstreamPool("127.0.0.1", free_port())
        try:
            with pytest.raises(UpstreamConnectError, match=r"cannot connect to upstream 127\.0\.0\.1:"):
                await pool.request(b"POST", b"/", body=b"payload")
        finally:
            pool.close()

    run(body)


def test_upstream_dying_mid_response_aborts_the_client_connection():
    async def body():
        async def dies(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly part")
            await writer.drain()
            writer.transport.abort()

        upstream = await asyncio.start_server(dies, "127.0.0.1", 0)
        async with upstream, forwarding(upstream.sockets[0].getsockname()[1]) as (port, _):
            data = await raw_exchange(port, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
            assert data.startswith(b"HTTP/1.1 200") and data.endswith(b"only part")  # cut short, then closed

    run(body)


async def _scripted_upstream(*parts: bytes, gap: float = 0.05) -> tuple[asyncio.Server, int]:
    """An upstream that answers every request on a connection with ``parts``, written ``gap`` apart."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while await reader.readuntil(b"\r\n\r\n"):
                for index, part in enumerate(parts):
                    if index:
                        await asyncio.sleep(gap)
                    writer.write(part)
                    await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    upstream = await asyncio.start_server(answer, "127.0.0.1", 0)
    return upstream, upstream.sockets[0].getsockname()[1]


@pytest.mark.parametrize(
    ("parts", "why"),
    [
        ((b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokEXTRA",), b"past the end of its response"),
        ((b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", b"helloEXTRA"), b"past the end of its response"),
        (
            (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\nEXTRA",),
            b"past the end of its response",
        ),
        ((b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\n",), b"past the end"),
        ((b"HTTP/1.1 2x0 OK\r\n\r\n",), b"malformed response"),
    ],
    ids=["excess-in-one-read", "excess-with-the-body", "after-last-chunk", "a-second-response", "malformed"],
)
def test_an_upstream_breaking_framing_before_its_answer_went_out_gets_502_and_a_log_line(parts, why, caplog):
    """Issue 11: bytes past Content-Length used to cut the client's connection with no answer, no log."""

    async def body():
        upstream, upstream_port = await _scripted_upstream(*parts)
        async with upstream, forwarding(upstream_port) as (port, pool):
            data = await raw_exchange(port, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", read_timeout=0.3)
            assert data.startswith(b"HTTP/1.1 502 ") and why in data, data
            assert pool.idle_connections == 0  # the broken connection is not kept

    with caplog.at_level("WARNING", logger="httpengine.upstream_connection"):
        run(body)
    assert any(why.decode() in record.getMessage() for record in caplog.records), caplog.text


def test_bytes_after_a_complete_forwarded_answer_leave_it_whole_and_the_connection_is_not_reused(caplog):
    async def body():
        upstream, upstream_port = await _scripted_upstream(
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", b"GARBAGE", gap=0.1
        )
        async with upstream, forwarding(upstream_port) as (port, pool):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET /first HTTP/1.1\r\nHost: a\r\n\r\n")
            first = await reader.readuntil(b"\r\n\r\nok")
            assert first.startswith(b"HTTP/1.1 200 OK")  # complete: the client keeps it
            # The stray bytes arrive 0.1 s later on the idle connection, which the pool then drops.
            await wait_until(lambda: pool.idle_connections == 0, what="the pool to drop the connection")
            writer.write(b"GET /second HTTP/1.1\r\nHost: a\r\n\r\n")  # on a fresh upstream connection
            second = await reader.readuntil(b"\r\n\r\nok")
            assert second.startswith(b"HTTP/1.1 200 OK")
            writer.close()

    with caplog.at_level("WARNING", logger="httpengine.upstream_connection"):
        run(body)
    assert "bytes after a complete response" in caplog.text


def test_excess_bytes_after_part_of_the_answer_went_out_cut_the_client_off_and_are_logged(caplog):
    async def body():
        upstream, upstream_port = await _scripted_upstream(
            b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nabc", b"defEXTRA"
        )
        async with upstream, forwarding(upstream_port) as (port, _):
            data = await raw_exchange(port, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
            assert data.startswith(b"HTTP/1.1 200 OK") and data.endswith(b"\r\n\r\nabc")  # cut short

    with caplog.at_level("WARNING", logger="httpengine.upstream_connection"):
        run(body)
    assert "past the end of its response" in caplog.text


def test_a_prepared_request_is_sent_as_made_each_time_with_the_pool_framing_it():
    """``prepare`` once, ``send`` many times (a probe, a load generator): the caller's Host wins, and
    hop-by-hop or framing headers it passed are dropped, since the pool frames the request itself."""

    async def body():
        heads = []

        async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                heads.append(head + await reader.readexactly(4))
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")

        upstream = await asyncio.start_server(answer, "127.0.0.1", 0)
        pool = UpstreamPool("127.0.0.1", upstream.sockets[0].getsockname()[1])
        headers = [(b"X-Tag", b"1"), (b"Connection", b"close"), (b"Transfer-Encoding", b"chunked"),
                   (b"Content-Length", b"99")]  # fmt: skip
        prepared = pool.prepare(b"PUT", b"/x", headers, b"data", host=b"rev.example")
        try:
            for _ in range(2):
                sink = BufferedResponse()
                assert await pool.send(prepared, sink) == 200
                assert sink.body == b"ok"
        finally:
            pool.close()
            upstream.close()
        sent = b"PUT /x HTTP/1.1\r\nhost: rev.example\r\nx-tag: 1\r\ncontent-length: 4\r\n\r\ndata"
        assert heads == [sent, sent]

    run(body)
