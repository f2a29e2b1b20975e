"""Issue 11, item 6: a connection flood on the queue-proxy's serving port no longer exhausts its
descriptors. ``kpa queue-proxy`` runs as a child process allowed only 256 descriptors; 300 idle
sockets on its serving port meet the cap derived from that limit (503 past it), while ``/stats``,
``/metrics`` and the readiness probe of the user container keep working on the reserve; once the
clients leave, the serving port serves again. Before the cap, the flood took every descriptor:
``/stats`` was refused and the user container was marked not ready until the clients left."""

from __future__ import annotations

import contextlib
import json
import resource
import socket
import subprocess
import sys
import time

import pytest
from queueproxy_fixtures import free_port
from server_thread import connect, get_ok, read_response, read_until_closed
from waiting import wait_until_blocking

pytestmark = pytest.mark.timeout(60)

FD_LIMIT = 256  # soft and hard: raise_fd_limit cannot lift it, so the derived serving cap is 96
FLOOD = 300


def _limit_descriptors() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (FD_LIMIT, FD_LIMIT))


def _get(port: int, path: bytes) -> tuple[int, bytes]:
    with connect(port) as sock:
        sock.sendall(b"GET %s HTTP/1.1\r\nHost: t\r\n\r\n" % path)
        return read_response(sock)


def _ready_gauge(metrics: bytes) -> float:
    for line in metrics.decode().splitlines():
        if line.startswith("kpa_queue_user_container_ready"):
            return float(line.split()[-1])
    raise AssertionError(f"no readiness gauge in {metrics[:500]!r}")


def test_a_connection_flood_meets_the_cap_while_stats_and_probes_keep_working(tmp_path):
    children: list[subprocess.Popen] = []
    flood: list[socket.socket] = []
    try:
        user_port = free_port()
        children.append(
            subprocess.Popen(
                [sys.executable, "-m", "kpa.sample_app", "--port", str(user_port)], stderr=subprocess.DEVNULL
            )
        )
        with open(tmp_path / "queue-proxy.log", "w") as log:
            proxy = subprocess.Popen(
                [sys.executable, "-m", "kpa", "queue-proxy", "--user-port", str(user_port),
                 "--serving-port", "0", "--admin-port", "0", "--stats-port", "0", "--metrics-port", "0",
                 "--log-level", "warning"],
                stdout=subprocess.PIPE, stderr=log, text=True, preexec_fn=_limit_descriptors,
            )  # fmt: skip
        children.append(proxy)
        ports = json.loads(proxy.stdout.readline())
        serving, stats, metrics = ports["serving_port"], ports["stats_port"], ports["metrics_port"]
        wait_until_blocking(
            lambda: _ready_gauge(_get(metrics, b"/metrics")[1]) == 1.0, 15, "the user container ready", 0.05
        )

        for _ in range(FLOOD):  # idle clients: connected, sending nothing
            flood.append(socket.create_connection(("127.0.0.1", serving), timeout=5))
        refused: set[socket.socket] = set()

        def refusals() -> int:
            for sock in flood:
                if sock not in refused:
                    sock.settimeout(0.0)
                    with contextlib.suppress(BlockingIOError):  # nothing came (yet): inside the cap
                        if sock.recv(12, socket.MSG_PEEK) == b"HTTP/1.1 503":
                            refused.add(sock)
            return len(refused)

        # Past the cap of 96, each is refused as soon as the proxy accepts it.
        wait_until_blocking(lambda: refusals() >= FLOOD - 96 - 8, 10, "the flood past the cap refused", 0.05)

        for _ in range(5):  # while the flood stays: stats, metrics and the probe keep working
            status, body = _get(stats, b"/stats")
            assert status == 200 and "average_concurrent_requests" in json.loads(body)
            assert _ready_gauge(_get(metrics, b"/metrics")[1]) == 1.0
            time.sleep(0.2)  # the prober runs meanwhile: the checks span a second of it
        with connect(serving) as extra:
            answer = read_until_closed(extra, deadline_s=2.0)
        assert answer.startswith(b"HTTP/1.1 503") and b"cap of 96 connections" in answer

        for sock in flood:
            sock.close()
        flood.clear()
        wait_until_blocking(lambda: get_ok(serving)[0] == 200, 10, "the serving port to recover", 0.05)
        assert proxy.poll() is None
    finally:
        for sock in flood:
            sock.close()
        for child in children:
            child.terminate()
        for child in children:
            try:
                child.wait(10)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait(5)
