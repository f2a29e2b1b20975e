"""A pod's processes: start the user container and its queue-proxy, probe until ready, stop them the
way Knative does — drain the queue-proxy first (it finishes in-flight requests), then end the user
container.

Every child runs in its own process group (its own session), with the parent-death signal set and
registered with the orphan watchdog (``localbackend.orphans``), so none outlives the stack. Which
pods exist and when they start or stop is the actuator's business, not this module's.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any

import httpx

from localbackend.orphans import OrphanGuard, die_with_parent
from localbackend.pod import Pod

log = logging.getLogger("kpa.actuator")

QUEUE_PROXY_COMMAND = (sys.executable, "-m", "kpa", "queue-proxy")
PROBE_INTERVAL = 0.05  # seconds between readiness probes of a starting pod (Knative's aggressive probing)
PROBE_TIMEOUT = 0.5
STOP_GRACE = 5.0  # after the queue-proxy drained, how long the user container gets to exit on SIGTERM
PORTS_TIMEOUT = 10.0  # how long the queue-proxy may take to say which ports it bound

Spawn = Callable[[Coroutine[Any, Any, None]], "asyncio.Task[None]"]


class PodProcesses:
    """Starts, probes and stops pods' processes; ``spawn`` runs the background copy of each
    queue-proxy's output into its log (the owner cancels those tasks when it closes)."""

    def __init__(self, queue_proxy_command: Sequence[str], spawn: Spawn) -> None:
        self.queue_proxy_command = tuple(queue_proxy_command)
        self._spawn = spawn
        self._http: httpx.AsyncClient | None = None
        self._preexec = die_with_parent()
        self._guard = OrphanGuard()

    def start(self) -> None:
        self._http = httpx.AsyncClient(timeout=PROBE_TIMEOUT)
        self._guard.start()

    async def close(self) -> None:
        """Stop the orphan watchdog (it kills what is still registered) and the probe client."""
        self._guard.close()
        if self._http is not None:
            await self._http.aclose()

    async def launch(self, pod: Pod) -> None:
        """Start the user container, then its queue-proxy; raises OSError when either cannot start."""
        template = pod.template
        pod.user_port = _free_port()
        # Knative gives the user container PORT and K_REVISION/K_CONFIGURATION/K_SERVICE.
        user_env = {
            **os.environ,
            "K_REVISION": template.revision.name,
            **template.env,
            template.port_env: str(pod.user_port),
        }
        with pod.log_path.open("ab") as out:
            pod.user = await asyncio.create_subprocess_exec(
                *template.command,
                env=user_env,
                cwd=template.workdir,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=out,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=self._preexec,
            )
        self._guard.watch(pod.user.pid)
        with pod.qp_log_path.open("ab") as err:
            pod.queue_proxy = await asyncio.create_subprocess_exec(
                *self.queue_proxy_command,
                "--admin-port",
                "0",
                "--stats-port",
                "0",
                "--metrics-port",
                "0",
                "--drain-timeout",
                str(template.drain_seconds),
                env=_queue_proxy_env(pod),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=err,
                start_new_session=True,
                preexec_fn=self._preexec,
            )
        self._guard.watch(pod.queue_proxy.pid)
        ports = await _read_ports(pod)
        pod.serving_port, pod.stats_port = ports["serving_port"], ports["stats_port"]
        pod.metrics_port = ports["metrics_port"]
        self._spawn(_drain_to_file(pod.queue_proxy.stdout, pod.qp_log_path))

    async def await_ready(self, pod: Pod) -> str | None:
        """Probe the queue-proxy (which probes the user container) until it answers; None when ready."""
        assert self._http is not None, "PodProcesses.start() first"
        deadline = time.monotonic() + pod.template.startup_timeout
        url = f"http://127.0.0.1:{pod.serving_port}/"
        headers = {"K-Network-Probe": "queue", "User-Agent": "kube-probe/kpa"}
        while time.monotonic() < deadline:
            exited = pod.exit_reason()
            if exited:
                return exited + " before becoming ready"
            with contextlib.suppress(httpx.HTTPError):
                answer = await self._http.get(url, headers=headers)
                if answer.status_code == 200:
                    return None
            await asyncio.sleep(PROBE_INTERVAL)
        return f"did not become ready within {pod.template.startup_timeout:g}s (startupTimeoutSeconds)"

    async def stop(self, pod: Pod, quick: bool = False) -> None:
        """Drain the queue-proxy (SIGTERM; it finishes in-flight requests), then stop the user
        container; ``quick``: give each a second, not the revision timeout."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(PORTS_TIMEOUT + 1.0):
                await pod.launched.wait()
        qp, user = pod.queue_proxy, pod.user
        drain_limit = 1.0 if quick else pod.template.timeout_seconds + pod.template.drain_seconds + 5.0
        if qp is not None and qp.returncode is None:
            kill_group(qp, signal.SIGTERM)
            if not await _wait(qp, drain_limit):
                log.warning(
                    "%s: queue-proxy of %s did not drain in %.0fs; killing it",
                    pod.template.revision,
                    pod.name,
                    drain_limit,
                )
                kill_group(qp, signal.SIGKILL)
                await _wait(qp, 2.0)
        if user is not None and user.returncode is None:
            kill_group(user, signal.SIGTERM)
            if not await _wait(user, 1.0 if quick else STOP_GRACE):
                kill_group(user, signal.SIGKILL)
                await _wait(user, 2.0)
        for proc in (qp, user):
            if proc is not None:
                kill_group(proc, signal.SIGKILL)  # anything the children left in their groups
                self._guard.forget(proc.pid)


def kill_group(proc: asyncio.subprocess.Process, sig: signal.Signals) -> None:
    """Signal the child's whole process group (children run with start_new_session=True)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


def _queue_proxy_env(pod: Pod) -> dict[str, str]:
    t = pod.template
    env = {
        **os.environ,
        "SERVING_NAMESPACE": t.revision.namespace,
        "SERVING_REVISION": t.revision.name,
        "SERVING_POD": pod.name,
        "SERVING_POD_IP": "127.0.0.1",
        "USER_PORT": str(pod.user_port),
        "QUEUE_SERVING_PORT": "0",
        "CONTAINER_CONCURRENCY": str(t.container_concurrency),
        "REVISION_TIMEOUT_SECONDS": str(t.timeout_seconds),
        "REVISION_IDLE_TIMEOUT_SECONDS": str(t.idle_timeout_seconds),
        **t.queue_proxy_env,
    }
    if t.readiness_probe:
        env["SERVING_READINESS_PROBE"] = t.readiness_probe
    if t.response_start_timeout_seconds is not None:
        env["REVISION_RESPONSE_START_TIMEOUT_SECONDS"] = str(t.response_start_timeout_seconds)
    return env


async def _read_ports(pod: Pod) -> dict[str, int]:
    """The queue-proxy binds port 0 and prints one JSON line naming the ports it got."""
    assert pod.queue_proxy is not None and pod.queue_proxy.stdout is not None
    try:
        async with asyncio.timeout(PORTS_TIMEOUT):
            line = await pod.queue_proxy.stdout.readline()
    except TimeoutError:
        raise OSError(f"queue-proxy did not report its ports within {PORTS_TIMEOUT:.0f}s") from None
    try:
        doc = json.loads(line)
        return {key: int(doc[key]) for key in ("serving_port", "stats_port", "metrics_port")}
    except (ValueError, KeyError, TypeError):
        code = pod.queue_proxy.returncode
        raise OSError(
            f"queue-proxy {'exited' if code is not None else 'printed'} {line[:200]!r} instead of its ports"
        ) from None


async def _wait(proc: asyncio.subprocess.Process, timeout: float) -> bool:
    try:
        async with asyncio.timeout(timeout):
            await proc.wait()
        return True
    except TimeoutError:
        return False


async def _drain_to_file(stream: asyncio.StreamReader | None, path: Path) -> None:
    if stream is None:
        return
    with path.open("ab") as out:
        while chunk := await stream.read(65536):
            out.write(chunk)
            out.flush()


def _free_port() -> int:
    """A loopback port free right now; the user container binds it a moment later."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
