"""One set of HTTP limits, checked on every kind of server we run (issue 11, items 5 and 6).

Each case sends one oversized or slow request to each server kind and checks the status the client
sees (or a clean close), then that the same server still answers a plain request at once. The
engine case stands for every server built on it: the queue-proxy's four ports, the activator and
``kpa up``'s entry and admin ports. The queue-proxy case runs with its own default limits, so only
the cases that break the defaults apply to it; the others run with ``TEST_LIMITS`` (short timeouts,
a small body limit and connection cap) to stay fast.
"""

from __future__ import annotations

import contextlib
import gzip
import select
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from server_thread import (
    ServerThread,
    connect,
    get_ok,
    read_response,
    read_until_closed,
    start_engine,
    start_predictor,
    start_queue_proxy,
    start_sample_app,
)
from waiting import wait_until_blocking

from httpengine.errors import RequestRefused
from httpengine.limits import Limits, default_max_connections
from httpengine.request import inflate

pytestmark = pytest.mark.timeout(60)

TEST_LIMITS = Limits(
    max_body_bytes=64 * 1024,
    head_timeout=0.5,
    body_timeout=0.5,
    keepalive_timeout=10.0,
    max_connections=4,
)
KINDS = ["engine", "queue-proxy", "predictor", "sample-app"]
DEFAULT_LIMITS_ONLY = {"queue-proxy"}  # started with Limits() as in production


@pytest.fixture(scope="module")
def thread():
    running = ServerThread()
    yield running
    running.close()


@pytest.fixture(scope="module", params=KINDS)
def server(request, thread, tmp_path_factory) -> tuple[str, int]:
    kind = request.param
    if kind == "engine":
        port, stop = thread.call(start_engine(TEST_LIMITS))
    elif kind == "queue-proxy":
        port, stop = thread.call(start_queue_proxy(Limits()))
    elif kind == "predictor":
        port, stop = thread.call(start_predictor(TEST_LIMITS, tmp_path_factory.mktemp("models")))
    else:
        port, stop = thread.call(start_sample_app(TEST_LIMITS))
    yield kind, port
    thread.call(stop())


def status_of(answer: bytes) -> int | None:
    return int(answer.split()[1]) if answer.startswith(b"HTTP/1.1 ") else None


@dataclass(frozen=True)
class Case:
    send: Callable[[socket.socket], None]
    status: int | None  # None: closed without an answer
    default_limits: bool = True  # past the production defaults too (so it applies to every kind)
    by_kind: tuple[tuple[str, int | None], ...] = ()  # kinds that answer otherwise, and how

    def expected(self, kind: str) -> int | None:
        return dict(self.by_kind).get(kind, self.status)


def _raw(data: bytes) -> Callable[[socket.socket], None]:
    def send(sock: socket.socket) -> None:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(data)  # refused before all of it went out: the answer is what counts

    return send


def _slowloris(sock: socket.socket) -> None:
    sock.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n")
    deadline = time.monotonic() + 3.0
    while time.monotonic() < deadline:  # one more header line every 0.1 s, never the end of the head
        if select.select([sock], [], [], 0.1)[0]:
            return  # the server answered (or closed)
        try:
            sock.sendall(b"X-Drip: %d\r\n" % int(time.monotonic() * 1000))
        except OSError:
            return


def _stalled_body(sock: socket.socket) -> None:
    sock.sendall(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\nonly part of it")


def _nothing(sock: socket.socket) -> None:
    pass


def _chunked(total: int) -> Callable[[socket.socket], None]:
    piece = b"x" * 8192
    chunks = b"".join(b"%x\r\n%b\r\n" % (len(piece), piece) for _ in range(total // len(piece)))
    return _raw(b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n" + chunks + b"0\r\n\r\n")


CASES = {
    "100KB-url": Case(_raw(b"GET /" + b"u" * 100_000 + b" HTTP/1.1\r\nHost: t\r\n\r\n"), 414),
    "1MB-header": Case(_raw(b"GET / HTTP/1.1\r\nHost: t\r\nX-Big: " + b"h" * 1_000_000 + b"\r\n\r\n"), 431),
    "10000-headers": Case(
        _raw(b"GET / HTTP/1.1\r\n" + b"".join(b"X-%d: v\r\n" % i for i in range(10_000)) + b"\r\n"), 431
    ),
    "101-headers": Case(
        _raw(b"GET / HTTP/1.1\r\n" + b"".join(b"X-%d: v\r\n" % i for i in range(101)) + b"\r\n"), 431
    ),
    # 413 from the head alone: the 300 MB are never sent, so a server that waited for them would time out
    "declared-300MB-body": Case(
        _raw(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 300000000\r\n\r\nfirst bytes"), 413
    ),
    # the client sends on after the 413 (the server drains what it sends for a while) and still reads it
    "declared-body-sent-anyway": Case(
        _raw(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 300000000\r\n\r\n" + b"b" * 2_000_000), 413
    ),
    "chunked-body-past-the-limit": Case(_chunked(128 * 1024), 413, default_limits=False),
    "slowloris-head": Case(_slowloris, 408, default_limits=False),
    # the sample app answers without waiting for the body, so a stalled one does not hold it up
    "stalled-body": Case(_stalled_body, 408, default_limits=False, by_kind=(("sample-app", 200),)),
    "silent-connection": Case(_nothing, None, default_limits=False),
}


@pytest.mark.parametrize("case", list(CASES))
def test_each_server_refuses_a_request_past_a_limit_then_serves_the_next(server, case):
    kind, port = server
    spec = CASES[case]
    if kind in DEFAULT_LIMITS_ONLY and not spec.default_limits:
        pytest.skip("needs the short test limits; this kind runs with the defaults")
    started = time.monotonic()
    with connect(port) as sock:
        spec.send(sock)
        answer = read_until_closed(sock, deadline_s=5.0)
    elapsed = time.monotonic() - started
    assert status_of(answer) == spec.expected(kind), answer[:300]
    if spec.expected(kind) != 200:
        assert b"connection: close" in answer.lower() or not answer
    assert elapsed < 4.0  # closed by the server, not by the client's deadline
    status, _ = get_ok(port)
    assert status == 200


def test_each_server_refuses_connections_past_its_cap_with_503_then_serves_again(server):
    kind, port = server
    if kind in DEFAULT_LIMITS_ONLY:
        pytest.skip("its cap comes from the descriptor limit: see test_connection_caps.py")
    held = []
    try:
        for _ in range(TEST_LIMITS.max_connections):  # keep-alive clients that stay
            sock = connect(port)
            sock.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
            assert read_response(sock)[0] == 200
            held.append(sock)
        with connect(port) as extra:
            answer = read_until_closed(extra)
        assert status_of(answer) == 503 and b"cap of 4 connections" in answer, answer
        assert b"connection: close" in answer and b"retry-after: 1" in answer
        for sock in held:  # the connections inside the cap are unharmed
            sock.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
            assert read_response(sock)[0] == 200
    finally:
        for sock in held:
            sock.close()
    # The server notices the closes on its own loop, a little later.
    wait_until_blocking(lambda: get_ok(port)[0] == 200, 5, "a 200 once the held connections closed", 0.02)


@pytest.mark.parametrize("kind", ["predictor"])
def test_a_gzip_bomb_is_refused_at_the_body_limit_without_inflating_it(thread, tmp_path, kind):
    """64 KB of gzip that inflates to 64 MB: decoding stops at the body limit (413), the server serves on.
    (Issue 11 saw 1 MB inflate to 1 GB, and the RSS stay at 1.4 GB.)"""
    bomb = gzip.compress(b"\0" * (64 << 20), compresslevel=9)
    assert len(bomb) < 128 << 10
    limits = Limits(max_body_bytes=4 << 20)
    port, stop = thread.call(start_predictor(limits, tmp_path))
    try:
        head = (
            b"POST /v2/models/any/infer HTTP/1.1\r\nHost: t\r\nContent-Encoding: gzip\r\n"
            b"Content-Length: %d\r\n\r\n" % len(bomb)
        )
        started = time.monotonic()
        with connect(port) as sock:
            sock.sendall(head + bomb)
            status, body = read_response(sock)
        assert status == 413 and b"larger than 4194304 bytes once decompressed" in body
        assert time.monotonic() - started < 2.0  # it stopped at 4 MB instead of inflating 64 MB
        assert get_ok(port)[0] == 200
    finally:
        thread.call(stop())


@pytest.mark.parametrize(
    ("data", "encoding", "status"),
    [
        (gzip.compress(b"a" * 2000), b"gzip", 413),
        (b"not gzip at all", b"gzip", 400),
        (gzip.compress(b"abc")[:-6], b"gzip", 400),  # cut short
        (b"abc", b"br", 400),
    ],
    ids=["past-limit", "corrupt", "truncated", "unknown-coding"],
)
def test_inflate_refuses_what_it_cannot_or_may_not_decode(data, encoding, status):
    with pytest.raises(RequestRefused) as refused:
        inflate(data, encoding, 1000)
    assert refused.value.status == status


def test_inflate_decodes_within_the_limit():
    assert inflate(gzip.compress(b"a" * 1000), b"gzip", 1000) == b"a" * 1000
    assert inflate(b"plain", b"identity", 10) == b"plain"


@pytest.mark.parametrize(
    ("fd_limit", "cap"),
    [(256, 96), (1024, 384), (20_000, 9_488), (1 << 20, 523_776)],
    ids=["256-fds", "1024-fds", "20000-fds", "1Mi-fds"],
)
def test_default_connection_cap_leaves_a_reserve_and_room_for_upstream_connections(fd_limit, cap):
    assert default_max_connections(fd_limit) == cap
