"""The synthetic user container `kpa validate` runs live: start-up and service times drawn from a scenario."""

import json
import socket
import subprocess
import sys
import time

import pytest
from queueproxy_fixtures import free_port
from waiting import wait_until_blocking


def spawn(port: int, service: str, startup: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "kpa.synthetic_app", "--port", str(port),
         "--service", service, "--startup", startup],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip


def wait_listening(port: int, proc: subprocess.Popen, limit: float = 20.0) -> float:
    """When the app was seen listening: no earlier than it began to, perhaps a poll later."""

    def listening() -> bool:
        assert proc.poll() is None, proc.stderr.read().decode()
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        except OSError:
            return False
        return True

    wait_until_blocking(listening, limit, f"the synthetic app to listen on port {port}")
    return time.monotonic()


def get(port: int, path: str = "/") -> tuple[str, float]:
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        reply = b""
        while chunk := conn.recv(65536):
            reply += chunk
    return reply.decode(), time.monotonic() - started


@pytest.fixture
def app(request):
    procs = []

    def start(service: str, startup: str = '{"dist": "constant", "value": 0}') -> tuple[int, float, float]:
        port = free_port()
        spawned = time.monotonic()
        proc = spawn(port, service, startup)
        procs.append(proc)
        return port, spawned, wait_listening(port, proc)

    yield start
    for proc in procs:
        proc.terminate()
    for proc in procs:
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def test_start_up_draw_counts_from_process_creation(app):
    # The interpreter's start and imports fall inside the 1.5 s draw instead of being added to it.
    _, spawned, listening = app('{"dist": "constant", "value": 0.05}', '{"dist": "constant", "value": 1.5}')
    assert 1.4 <= listening - spawned < 2.2


def test_each_request_waits_one_service_draw(app):
    port, _, _ = app('{"dist": "constant", "value": 0.3}')
    reply, took = get(port)
    assert reply.startswith("HTTP/1.1 200") and "hello from" in reply
    assert 0.3 <= took < 1.0
    stats = json.loads(get(port, "/_stats")[0].split("\r\n\r\n", 1)[1])
    assert stats["served"] == 1 and stats["in_flight"] == 0


def test_process_age_reads_the_kernels_process_start():
    code = "import time; time.sleep(0.5); import kpa.synthetic_app as s; print(s.process_age())"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    age = float(done.stdout)
    assert 0.5 <= age < 5.0


@pytest.mark.parametrize(
    ("service", "startup", "named"),
    [
        ('{"dist": "weird"}', '{"dist": "constant", "value": 0}', "--service"),
        ('{"dist": "constant", "value": 0}', "{dist", "--startup"),
        ('{"dist": "exponential", "mean": -1}', '{"dist": "constant", "value": 0}', "service_time.mean"),
    ],
    ids=["unknown-service-distribution", "startup-not-json", "negative-mean"],
)
def test_a_bad_distribution_is_refused_naming_the_option(service, startup, named):
    proc = spawn(free_port(), service, startup)
    try:
        _, err = proc.communicate(timeout=20)
    finally:
        proc.kill()  # a no-op once it exited; stops it if it did not
        proc.wait()
    assert proc.returncode == 2
    assert named in err.decode() and "expected" in err.decode()
