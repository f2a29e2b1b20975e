"""`kpa load`'s client on real loopback servers: what it sends, what it reads back, how it fails.

A load run counts outcomes instead of stopping at the first failure, so every failure must come back
as a ``Reply`` with a reason a person can act on, never as an exception.
"""

from __future__ import annotations

import asyncio

import pytest
from queueproxy_fixtures import free_port, run

from httpengine.request import Request
from httpengine.response import Response
from httpengine.server import HttpServer
from kpa.load import Client, Reply, Target, parse_phases, run_load

pytestmark = pytest.mark.timeout(30)


class Recorder:
    """A server handler that keeps every request (head and body) and answers ``status`` with ``headers``."""

    def __init__(self, status: int = 200, headers: tuple[tuple[bytes, bytes], ...] = ()) -> None:
        self.status = status
        self.headers = headers
        self.seen: list[tuple[bytes, bytes, dict[bytes, bytes], bytes]] = []
        self.clients: set[str] = set()

    async def __call__(self, request: Request, response: Response) -> None:
        body = await request.body.read_all(1 << 20)
        self.seen.append((request.method, request.target, dict(request.headers), body))
        self.clients.add(request.client)
        response.send(self.status, b"hello", headers=self.headers)


async def serving(handler) -> tuple[HttpServer, int]:
    server = HttpServer(handler, name="load-target")
    _, port = await server.start("127.0.0.1", 0)
    return server, port


def test_the_target_request_goes_out_as_configured_on_one_reused_connection():
    async def body():
        recorder = Recorder()
        server, port = await serving(recorder)
        target = Target(
            "127.0.0.1",
            port,
            "/v1/models/m:predict?x=1",
            "POST",
            host_header="hello.default",
            body=b'{"instances": [1]}',
            headers=(("Content-Type", "application/json"), ("X-Trace", "abc")),
        )
        client = Client(target)
        try:
            replies = [await client.request() for _ in range(3)]
        finally:
            client.close()
            await server.shutdown(1.0)
        assert replies == [Reply(200)] * 3
        assert len(recorder.clients) == 1, "keep-alive: one connection carries every request"
        method, path, headers, sent = recorder.seen[-1]
        assert (method, path, sent) == (b"POST", b"/v1/models/m:predict?x=1", b'{"instances": [1]}')
        assert headers[b"host"] == b"hello.default"
        assert headers[b"content-type"] == b"application/json"
        assert headers[b"x-trace"] == b"abc"
        assert headers[b"content-length"] == b"18"

    run(body)


@pytest.mark.parametrize(
    ("extra", "cold"),
    [
        pytest.param((), False, id="no cold-start header"),
        pytest.param(((b"x-kpa-cold-start", b"true"),), True, id="held for a cold start"),
        pytest.param(((b"X-KPA-Cold-Start", b"false"),), False, id="not held, header in capitals"),
    ],
)
def test_the_activator_cold_start_header_is_read_from_a_plain_head(extra, cold):
    """A fixed-length head comes to the client as it arrived (the engine's fast path)."""

    async def body():
        server, port = await serving(Recorder(headers=extra))
        client = Client(Target("127.0.0.1", port))
        try:
            assert await client.request() == Reply(200, "", cold)
        finally:
            client.close()
            await server.shutdown(1.0)

    run(body)


def test_the_cold_start_header_is_read_from_a_head_that_needs_the_parser():
    """A chunked answer goes through httptools; the header must count there too."""

    async def body():
        async def chunked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            while await reader.readuntil(b"\r\n\r\n"):
                writer.write(
                    b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\nX-KPA-Cold-Start: true\r\n\r\n"
                    b"5\r\nhello\r\n0\r\n\r\n"
                )

        upstream = await asyncio.start_server(chunked, "127.0.0.1", 0)
        client = Client(Target("127.0.0.1", upstream.sockets[0].getsockname()[1]))
        try:
            assert [await client.request() for _ in range(2)] == [Reply(201, "", True)] * 2
        finally:
            client.close()
            upstream.close()

    run(body)


@pytest.mark.parametrize(
    ("status", "answer", "detail"),
    [
        pytest.param(504, b"request timeout\n", "request timeout", id="queue-proxy timeout"),
        pytest.param(
            503, b"queue full: depth 40\nsecond line\n", "queue full: depth 40", id="first line only"
        ),
        pytest.param(502, b"x" * 500, "x" * 200, id="long body cut at 200 bytes"),
        pytest.param(200, b"fine\n", "", id="a success keeps no body"),
    ],
)
def test_an_error_answer_comes_back_with_its_first_body_line(status, answer, detail):
    """`kpa validate` names each failed request by what the server said; the body is the why."""

    async def body():
        async def handler(request: Request, response: Response) -> None:
            response.send(status, answer)

        server, port = await serving(handler)
        client = Client(Target("127.0.0.1", port))
        try:
            reply = await client.request()
        finally:
            client.close()
            await server.shutdown(1.0)
        assert (reply.status, reply.detail) == (status, detail)

    run(body)


def test_a_refused_connection_is_a_failed_reply_named_connection_refused():
    async def body():
        client = Client(Target("127.0.0.1", free_port()))
        assert await client.request() == Reply(0, "connection refused")

    run(body)


def test_a_server_that_never_answers_is_a_timeout_reply_after_the_timeout():
    async def body():
        async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.read()

        upstream = await asyncio.start_server(silent, "127.0.0.1", 0)
        client = Client(Target("127.0.0.1", upstream.sockets[0].getsockname()[1]), timeout=0.3)
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            assert await client.request() == Reply(0, "timeout")
        finally:
            client.close()
            upstream.close()
        assert 0.25 < loop.time() - started < 2.0

    run(body)


def test_a_server_hanging_up_mid_answer_is_a_failed_reply_that_says_so():
    async def body():
        async def cut_short(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly part")
            await writer.drain()
            writer.close()

        upstream = await asyncio.start_server(cut_short, "127.0.0.1", 0)
        client = Client(Target("127.0.0.1", upstream.sockets[0].getsockname()[1]))
        try:
            assert await client.request() == Reply(0, "closed the connection mid-response")
        finally:
            client.close()
            upstream.close()

    run(body)


def test_requests_beyond_max_connections_wait_for_a_free_one():
    async def body():
        in_flight = peak = 0

        async def slow(request: Request, response: Response) -> None:
            nonlocal in_flight, peak
            in_flight += 1
            peak = max(peak, in_flight)
            await asyncio.sleep(0.05)
            in_flight -= 1
            response.send(200, b"ok")

        server, port = await serving(slow)
        client = Client(Target("127.0.0.1", port), max_connections=2)
        try:
            replies = await asyncio.gather(*(client.request() for _ in range(8)))
        finally:
            client.close()
            await server.shutdown(1.0)
        assert replies == [Reply(200)] * 8
        assert peak == 2

    run(body)


def test_run_load_sends_an_open_loop_phase_on_schedule_and_records_each_request():
    async def body():
        recorder = Recorder()
        server, port = await serving(recorder)
        client = Client(Target("127.0.0.1", port))
        try:
            result = await run_load(client, parse_phases(["rate:50:0.4", "burst:5"]))
        finally:
            client.close()
            await server.shutdown(1.0)
        summary = result.summary()
        assert (summary["requests"], summary["ok"], summary["outcomes"]) == (25, 25, {"200": 25})
        assert [r.phase for r in result.records] == [0] * 20 + [1] * 5
        assert len(recorder.seen) == 25

    run(body)
