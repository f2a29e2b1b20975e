"""The HTTP engine's upstream pool on real loopback sockets against upstreams that misbehave: a
stale or reset connection, a refusal, a hang-up, broken framing; and prepared requests of our own.

The server side (framing, streaming, bad input) is in test_http_engine_server.py.
"""

from __future__ import annotations

import asyncio

import pytest
from queueproxy_fixtures import forwarding, free_port, raw_exchange, run
from waiting import wait_until

from httpengine.errors import UpstreamConnectError, UpstreamError
from httpengine.response import BufferedResponse
from httpengine.upstream import UpstreamPool

pytestmark = pytest.mark.timeout(30)


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
                await wait_until(
                    lambda: transport.is_closing() and protocol.closed,  # connection_lost has run too
                    what="the upstream's reset",
                )
                return transport, protocol

        pool = UpstreamPool("127.0.0.1", upstream.sockets[0].getsockname()[1])
        pool._loop = ResetBeforeFirstWrite()  # the race made certain: no public way to order a reset
        try:
            with pytest.raises(UpstreamConnectError, match="closed the connection as it opened"):
                async with asyncio.timeout(2.0):
                    await pool.request(b"GET", b"/")
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
