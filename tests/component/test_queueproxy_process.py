"""`kpa queue-proxy` as a real child process: configuration errors, drain on SIGTERM, bounded memory."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time

import httpx
import pytest
from queueproxy_fixtures import UserContainer, free_port, run
from waiting import wait_until

pytestmark = pytest.mark.timeout(60)

ZERO_PORTS = ["--serving-port", "0", "--admin-port", "0", "--stats-port", "0", "--metrics-port", "0"]


class QueueProxyProcess:
    """A `kpa queue-proxy` child; ``ports`` come from the JSON line it prints on start."""

    def __init__(self, *args: str, env: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "kpa", "queue-proxy", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={**os.environ, **(env or {})},
            text=True,
        )
        self.ports: dict[str, int] = {}

    async def started(self, timeout: float = 10.0) -> QueueProxyProcess:
        """Wait for the ports line; a start that fails kills the child before raising."""
        try:
            line = await asyncio.wait_for(asyncio.to_thread(self.proc.stdout.readline), timeout)
            if not line:
                raise AssertionError(
                    f"queue-proxy exited early: {self.proc.wait()} {self.proc.stderr.read()}"
                )
            self.ports = json.loads(line)
        except BaseException:
            self.kill()
            raise
        return self

    def url(self, port_name: str, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.ports[port_name]}{path}"

    async def wait_exit(self, timeout: float) -> int:
        return await asyncio.wait_for(asyncio.to_thread(self.proc.wait), timeout)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


async def probe_answer(qp: QueueProxyProcess, client: httpx.AsyncClient) -> httpx.Response:
    return await client.get(qp.url("serving_port"), headers={"K-Network-Probe": "queue"})


async def probe_answers(qp: QueueProxyProcess, client: httpx.AsyncClient, status: int) -> bool:
    return (await probe_answer(qp, client)).status_code == status


async def ready(qp: QueueProxyProcess, client: httpx.AsyncClient) -> None:
    await wait_until(lambda: probe_answers(qp, client, 200), 10, "the queue-proxy to pass its probe", 0.02)


@pytest.mark.parametrize(
    ("env", "args", "message"),
    [
        ({"CONTAINER_CONCURRENCY": "x"}, [], 'CONTAINER_CONCURRENCY="x": not an integer'),
        ({"CONTAINER_CONCURRENCY": "-1"}, [], 'CONTAINER_CONCURRENCY="-1": must be >= 0'),
        ({"REVISION_TIMEOUT_SECONDS": "soon"}, [], 'REVISION_TIMEOUT_SECONDS="soon": not a number'),
        ({"USER_PORT": "70000"}, [], 'USER_PORT="70000": must be in [1, 65535]'),
        ({"SERVING_READINESS_PROBE": "{nope"}, [], "SERVING_READINESS_PROBE='{nope': not valid JSON"),
        ({"CONTAINER_CONCURRENCY": "x"}, ["--container-concurrency", "2", "--queue-depth", "y"],
         '--queue-depth="y": not an integer'),
    ],
    ids=["cc-not-int", "cc-negative", "timeout-not-number", "port-range", "probe-json", "flag-overrides-env"],
)  # fmt: skip
def test_bad_settings_exit_non_zero_naming_the_setting(env, args, message):
    proc = subprocess.run(
        [sys.executable, "-m", "kpa", "queue-proxy", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 2
    assert message in proc.stderr


def test_a_busy_port_exits_1_naming_it():
    async def body():
        blocker = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
        port = blocker.sockets[0].getsockname()[1]
        qp = QueueProxyProcess("--serving-port", str(port), *ZERO_PORTS[2:], "--user-port", str(free_port()))
        try:
            assert await qp.wait_exit(20) == 1
            assert f"cannot listen on 127.0.0.1:{port} (serving_port)" in qp.proc.stderr.read()
        finally:
            qp.kill()
            blocker.close()

    run(body, timeout=30)


def test_sigterm_under_load_loses_no_request_and_exits_after_the_quiet_period():
    async def body():
        user = await UserContainer().start()
        qp = QueueProxyProcess(*ZERO_PORTS, "--user-port", str(user.port), "--drain-timeout", "0.5",
                               env={"CONTAINER_CONCURRENCY": "4"})  # fmt: skip
        try:
            await qp.started()
            async with httpx.AsyncClient(timeout=10, limits=httpx.Limits(max_connections=50)) as client:
                await ready(qp, client)
                statuses: list[int] = []
                last_sent = 0.0
                stop_at = time.monotonic() + 1.2

                async def worker() -> None:
                    nonlocal last_sent
                    while time.monotonic() < stop_at:
                        last_sent = time.monotonic()
                        statuses.append(
                            (await client.get(qp.url("serving_port", "/sleep?s=0.02"))).status_code
                        )

                workers = [asyncio.ensure_future(worker()) for _ in range(8)]
                long_request = asyncio.ensure_future(
                    client.get(qp.url("serving_port", "/sleep?s=0.9"), headers={"x-test": "long"})
                )
                try:
                    await wait_until(
                        lambda: any(seen.get("x-test") == "long" for seen in user.seen_headers),
                        5,
                        "the long request to reach the user container",
                    )
                    qp.proc.send_signal(signal.SIGTERM)
                    await wait_until(
                        lambda: probe_answers(qp, client, 503), 5, "readiness to fail on SIGTERM"
                    )
                    probe = await probe_answer(qp, client)
                    assert (probe.status_code, probe.content) == (503, b"shutting down\n")
                    await asyncio.gather(*workers)
                    assert (await long_request).status_code == 200  # in flight at SIGTERM, finished
                finally:
                    for task in (*workers, long_request):
                        task.cancel()
            assert len(statuses) > 50 and set(statuses) == {200}  # traffic kept being served while draining
            assert await qp.wait_exit(10) == 0
            # The quiet period restarts when a request arrives, which is after the client sent it.
            assert time.monotonic() - last_sent >= 0.5
            assert "drained" in qp.proc.stderr.read()
        finally:
            qp.kill()
            await user.stop()

    run(body, timeout=30)


def test_wait_for_drain_blocks_until_the_sigterm_drain_completes():
    async def body():
        user = await UserContainer().start()
        qp = QueueProxyProcess(*ZERO_PORTS, "--user-port", str(user.port), "--drain-timeout", "0.3")
        try:
            await qp.started()
            async with httpx.AsyncClient(timeout=10) as client:
                await ready(qp, client)
                began = time.monotonic()
                pre_stop = asyncio.ensure_future(client.get(qp.url("admin_port", "/wait-for-drain")))
                await asyncio.sleep(0.1)  # a negative check: without a drain it must not answer yet
                assert not pre_stop.done()
                qp.proc.send_signal(signal.SIGTERM)
                answer = await pre_stop
                assert (answer.status_code, answer.content) == (200, b"drained\n")
                assert time.monotonic() - began >= 0.3
            assert await qp.wait_exit(10) == 0
        finally:
            qp.kill()
            await user.stop()

    run(body, timeout=30)


def test_wait_for_drain_without_a_sigterm_answers_after_a_second_and_the_pod_stays_ready():
    """A preStop hook from a container restart (liveness), or anyone on the admin port, changes nothing."""

    async def body():
        user = await UserContainer().start()
        qp = QueueProxyProcess(*ZERO_PORTS, "--user-port", str(user.port), "--drain-timeout", "5")
        try:
            await qp.started()
            async with httpx.AsyncClient(timeout=10) as client:
                await ready(qp, client)
                pre_stop = asyncio.ensure_future(client.get(qp.url("admin_port", "/wait-for-drain")))
                await asyncio.sleep(0.2)  # a negative check: time for the call to (wrongly) start a drain
                assert (await probe_answer(qp, client)).status_code == 200  # not draining
                answer = await asyncio.wait_for(pre_stop, 3)
                assert answer.content == b"not draining: no SIGTERM followed\n"
            assert qp.proc.poll() is None
        finally:
            qp.kill()
            await user.stop()

    run(body, timeout=30)


def _peak_rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise AssertionError("no VmHWM")


def test_a_20_mb_upload_streams_through_with_bounded_memory():
    async def body():
        user = await UserContainer().start()
        qp = QueueProxyProcess(*ZERO_PORTS, "--user-port", str(user.port))
        try:
            await qp.started()
            async with httpx.AsyncClient(timeout=30) as client:
                await ready(qp, client)
                assert (await client.get(qp.url("serving_port", "/"))).status_code == 200
                baseline = _peak_rss_kib(qp.proc.pid)
                size = 20 * 1024 * 1024

                async def blocks():
                    block = os.urandom(256 * 1024)
                    for _ in range(size // len(block)):
                        yield block

                answer = await client.post(qp.url("serving_port", "/count"), content=blocks())
                assert (answer.status_code, answer.content) == (200, str(size).encode())
            growth = _peak_rss_kib(qp.proc.pid) - baseline
            assert growth < 6 * 1024, f"queue-proxy peak memory grew {growth} KiB for a 20 MiB body"
        finally:
            qp.kill()
            await user.stop()

    run(body, timeout=40)
