"""The predictor's HTTP face on a real loopback socket with raw clients: keep-alive, pipelining,
100-continue, chunked and compressed bodies, limits, malformed input and graceful shutdown.

The predictor serves on the engine every server of ours runs on (``httpengine``), started here
the way ``kpa predictor`` starts it (``predictor.server.serve``), on an empty model repository: the
routes that need no model say enough about framing."""

from __future__ import annotations

import gzip
import threading
import time

import pytest
from server_thread import ServerThread, connect, read_response, start_predictor
from waiting import wait_until_blocking

from httpengine.limits import Limits

pytestmark = pytest.mark.timeout(30)

LIMITS = Limits(max_body_bytes=1000, keepalive_timeout=1.0)


@pytest.fixture(scope="module")
def thread():
    running = ServerThread()
    yield running
    running.close()


@pytest.fixture
def server(thread, tmp_path):
    port, stop = thread.call(start_predictor(LIMITS, tmp_path))
    yield port, lambda: thread.call(stop())
    thread.call(stop())


def test_keep_alive_serves_several_requests_on_one_connection(server):
    port, _ = server
    with connect(port) as sock:
        for _ in range(3):
            sock.sendall(b"POST /v2/repository/index HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\n{}")
            status, body = read_response(sock)
            assert status == 200 and body == b"[]"


def test_a_long_pipeline_is_answered_in_order(server):
    port, _ = server
    paths = [b"/v2/health/live", b"/v2/models/m%d/ready" % 0, b"/v2"] * 300
    with connect(port) as sock:
        sock.sendall(b"".join(b"GET %s HTTP/1.1\r\nHost: t\r\n\r\n" % path for path in paths))
        for path in paths:
            status, body = read_response(sock)
            if path == b"/v2/health/live":
                assert (status, body) == (200, b'{"status":"alive","live":true}')
            elif path == b"/v2":
                assert status == 200 and b"kpa-predictor" in body
            else:
                assert status == 404 and b"m0" in body


def test_chunked_and_gzip_request_bodies_are_decoded_before_the_route_answers(server):
    port, _ = server
    with connect(port) as sock:
        sock.sendall(b"POST /v2/models/nope/infer HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n")
        sock.sendall(b'3\r\n{"i\r\n2\r\n":\r\n2\r\n1}\r\n0\r\n\r\n')
        status, body = read_response(sock)
        assert status == 404 and b"nope" in body  # the whole body arrived; then the model was looked up
        packed = gzip.compress(b'{"inputs": []}')
        sock.sendall(
            b"POST /v2/models/nope/infer HTTP/1.1\r\nHost: t\r\nContent-Encoding: gzip\r\n"
            b"Content-Length: %d\r\n\r\n%b" % (len(packed), packed)
        )
        assert read_response(sock)[0] == 404
        sock.sendall(
            b"POST /v2/models/nope/infer HTTP/1.1\r\nHost: t\r\nContent-Encoding: gzip\r\n"
            b"Content-Length: 8\r\n\r\nnot gzip"
        )
        status, body = read_response(sock)
        assert status == 400 and b"not valid gzip data" in body


def test_expect_100_continue_is_answered_before_the_body(server):
    port, _ = server
    with connect(port) as sock:
        sock.sendall(
            b"POST /v2/repository/index HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n"
            b"Expect: 100-continue\r\n\r\n"
        )
        assert sock.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(b"{}")
        assert read_response(sock) == (200, b"[]")


def test_http_1_0_closes_after_the_response(server):
    port, _ = server
    with connect(port) as sock:
        sock.sendall(b"GET /v2/health/live HTTP/1.0\r\n\r\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
        assert data.startswith(b"HTTP/1.1 200 OK") and b"connection: close" in data


@pytest.mark.parametrize(
    ("raw", "status", "message"),
    [
        (
            b"POST /v2/repository/index HTTP/1.1\r\nHost: t\r\nContent-Length: 5000\r\n\r\n",
            413,
            b"than 1000 bytes",
        ),
        (b"NOT HTTP AT ALL\r\n\r\n", 400, b"malformed HTTP request"),
        (b"GET / HTTP/1.1\r\nContent-Length: nope\r\n\r\n", 400, b"malformed HTTP request"),
    ],
    ids=["declared-body-past-the-limit", "not-http", "content-length-not-a-number"],
)
def test_bad_requests_get_an_error_and_the_connection_closes(server, raw, status, message):
    port, _ = server
    with connect(port) as sock:
        sock.sendall(raw)
        got, body = read_response(sock)
        assert got == status and message in body
        assert sock.recv(10) == b""
    with connect(port) as sock:  # the server is still there for the next client
        sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: t\r\n\r\n")
        assert read_response(sock)[0] == 200


def test_idle_keep_alive_connections_are_closed(server):
    port, _ = server
    with connect(port) as sock:
        started = time.monotonic()  # before the request: the server's idle clock starts after this
        sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: t\r\n\r\n")
        read_response(sock)
        assert sock.recv(10) == b""  # closed by the 1 s keep-alive timeout (checked once a second)
        assert 0.5 < time.monotonic() - started < 4


def test_shutdown_lets_a_request_in_flight_finish(server):
    port, stop = server
    with connect(port) as sock:
        sock.sendall(
            b"POST /v2/repository/index HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n"
            b"Expect: 100-continue\r\n\r\n"
        )
        assert sock.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"  # its handler is reading the body
        sock.sendall(b"1\r\n{\r\n")
        stopper = threading.Thread(target=stop)
        stopper.start()
        try:
            wait_until_blocking(lambda: _refuses_connections(port), what="the shutdown to stop listening")
            sock.sendall(b"1\r\n}\r\n0\r\n\r\n")
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
        finally:
            stopper.join(10)
    assert data.startswith(b"HTTP/1.1 200 OK") and b"connection: close" in data and data.endswith(b"[]")
    assert _refuses_connections(port)


def _refuses_connections(port: int) -> bool:
    try:
        connect(port, timeout=1.0).close()
    except ConnectionRefusedError:
        return True
    return False
