"""The predictor's HTTP/1.1 server on a real loopback socket with raw clients: framing, keep-alive,
pipelining, 100-continue, chunked bodies, limits, malformed input and graceful shutdown."""

from __future__ import annotations

import asyncio
import socket
import threading
import time

import pytest

from predictor.http_server import HttpServer, Request
from predictor.server import bind

pytestmark = pytest.mark.timeout(30)


def echo(request: Request):
    """Answers at once, except /slow (awaited) and /boom (the handler itself fails)."""
    if request.target == b"/boom":
        raise RuntimeError("boom")
    if request.target == b"/slow":
        return _later(request)
    return _echoed(request)


def _echoed(request: Request):
    body = b"%s %s %d %s" % (
        request.method.encode(),
        request.target,
        len(request.body),
        bytes(request.body[:16]),
    )
    return 200, body, [(b"content-type", b"text/plain")]


async def _later(request: Request):
    await asyncio.sleep(0.3)
    return _echoed(request)


class Running:
    """An HttpServer on its own loop thread, stopped with a graceful shutdown."""

    def __init__(self, **options):
        self.sock = bind("127.0.0.1", 0)
        self.port = self.sock.getsockname()[1]
        self.loop = asyncio.new_event_loop()
        self.server = HttpServer(echo, **options)
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.server.start(self.sock), self.loop).result(5)

    def shutdown(self, grace: float = 5.0) -> None:
        asyncio.run_coroutine_threadsafe(self.server.shutdown(grace), self.loop).result(grace + 5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.sock.close()


@pytest.fixture
def server():
    running = Running(keep_alive_s=1.0, max_body_bytes=1000)
    yield running
    running.shutdown()


def _connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=5)


_buffers: dict[int, bytes] = {}  # bytes read past a response, per socket (pipelined answers)


def _read_response(sock: socket.socket) -> tuple[bytes, dict[bytes, bytes], bytes]:
    data = _buffers.pop(sock.fileno(), b"")
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed after {data!r}")
        data += chunk
    head, rest = data.split(b"\r\n\r\n", 1)
    status, *lines = head.split(b"\r\n")
    headers = {k.lower(): v for k, v in (line.split(b": ", 1) for line in lines)}
    length = int(headers.get(b"content-length", b"0"))
    while len(rest) < length:
        rest += sock.recv(65536)
    _buffers[sock.fileno()] = rest[length:]
    return status, headers, rest[:length]


def test_keep_alive_serves_several_requests_on_one_connection(server):
    with _connect(server.port) as sock:
        for index in range(3):
            sock.sendall(b"POST /x%d HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello" % index)
            status, headers, body = _read_response(sock)
            assert status == b"HTTP/1.1 200 OK" and body == b"POST /x%d 5 hello" % index
            assert b"connection" not in headers


def test_pipelined_requests_are_answered_in_order(server):
    with _connect(server.port) as sock:
        sock.sendall(b"GET /slow HTTP/1.1\r\nHost: t\r\n\r\nGET /fast HTTP/1.1\r\nHost: t\r\n\r\n")
        assert _read_response(sock)[2].startswith(b"GET /slow")
        assert _read_response(sock)[2].startswith(b"GET /fast")


def test_a_long_pipeline_behind_a_slow_request_is_answered_in_order(server):
    with _connect(server.port) as sock:
        fast = b"".join(b"GET /fast%d HTTP/1.1\r\nHost: t\r\n\r\n" % index for index in range(2000))
        sock.sendall(b"GET /slow HTTP/1.1\r\nHost: t\r\n\r\n" + fast)
        assert _read_response(sock)[2].startswith(b"GET /slow")
        for index in range(2000):
            assert _read_response(sock)[2].startswith(b"GET /fast%d " % index)


def test_a_failing_handler_gets_a_500_and_the_connection_keeps_serving(server):
    with _connect(server.port) as sock:
        sock.sendall(b"GET /boom HTTP/1.1\r\nHost: t\r\n\r\n")
        status, _, body = _read_response(sock)
        assert status == b"HTTP/1.1 500 Internal Server Error" and b"boom" in body
        sock.sendall(b"GET /after HTTP/1.1\r\nHost: t\r\n\r\n")
        assert _read_response(sock)[2].startswith(b"GET /after")


def test_chunked_request_bodies_are_reassembled(server):
    with _connect(server.port) as sock:
        sock.sendall(b"POST /c HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n")
        sock.sendall(b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n")
        assert _read_response(sock)[2] == b"POST /c 5 abcde"


def test_expect_100_continue_is_answered_before_the_body(server):
    with _connect(server.port) as sock:
        sock.sendall(b"POST /e HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n")
        assert sock.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(b"data")
        assert _read_response(sock)[2] == b"POST /e 4 data"


def test_http_1_0_closes_after_the_response(server):
    with _connect(server.port) as sock:
        sock.sendall(b"GET /old HTTP/1.0\r\n\r\n")
        status, headers, _ = _read_response(sock)
        assert status == b"HTTP/1.1 200 OK" and headers[b"connection"] == b"close"
        assert sock.recv(10) == b""


@pytest.mark.parametrize(
    ("raw", "status", "message"),
    [
        (
            b"POST /big HTTP/1.1\r\nHost: t\r\nContent-Length: 5000\r\n\r\n" + b"x" * 5000,
            b"413",
            b"exceeds 1000 bytes",
        ),
        (b"NOT HTTP AT ALL\r\n\r\n", b"400", b"malformed HTTP request"),
        (b"GET / HTTP/1.1\r\nContent-Length: nope\r\n\r\n", b"400", b"malformed HTTP request"),
    ],
)
def test_bad_requests_get_an_error_and_the_connection_closes(server, raw, status, message):
    with _connect(server.port) as sock:
        sock.sendall(raw)
        got_status, headers, body = _read_response(sock)
        assert got_status.split()[1] == status and message in body
        assert headers[b"connection"] == b"close"
    with _connect(server.port) as sock:  # the server is still there for the next client
        sock.sendall(b"GET /ok HTTP/1.1\r\nHost: t\r\n\r\n")
        assert _read_response(sock)[0] == b"HTTP/1.1 200 OK"


def test_idle_keep_alive_connections_are_closed(server):
    with _connect(server.port) as sock:
        sock.sendall(b"GET /a HTTP/1.1\r\nHost: t\r\n\r\n")
        _read_response(sock)
        started = time.monotonic()
        assert sock.recv(10) == b""  # closed by the 1 s idle timeout
        assert 0.5 < time.monotonic() - started < 4


def test_shutdown_lets_a_request_in_flight_finish():
    running = Running()
    with _connect(running.port) as sock:
        sock.sendall(b"GET /slow HTTP/1.1\r\nHost: t\r\n\r\n")
        time.sleep(0.05)
        stopper = threading.Thread(target=running.shutdown)
        stopper.start()
        status, headers, body = _read_response(sock)
        stopper.join(10)
    assert status == b"HTTP/1.1 200 OK" and body.startswith(b"GET /slow")
    assert headers[b"connection"] == b"close"
    with pytest.raises(OSError):
        _connect(running.port)
