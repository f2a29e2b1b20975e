"""The fake kubelet's hands: start a container's process, signal it, run a probe or a hook once.

Every container runs in a process group of its own (its own session), so a signal reaches what it
started too, with Linux's parent-death signal set (``prctl(PR_SET_PDEATHSIG, SIGKILL)``) between
fork and exec, so a test process that is killed outright takes its containers with it. The signal
follows the thread that forked: the kubelet starts every process from its one event-loop thread,
which lives as long as the kubelet. (A grandchild a container starts, e.g. through ``sh -c``, is
reached by the process-group kill of a clean stop, not by the parent-death signal.)
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import ssl
import sys
from collections.abc import Callable, Mapping
from pathlib import Path

from fakecluster.pod_spec import Launch, Probe

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
USER_AGENT = "kube-probe/1.30"


def die_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` giving the child SIGKILL when the forking thread dies; None without prctl.

    Looked up here, in the parent, so the child makes one libc call; a child whose parent is already
    gone (the signal would never come) exits at once.
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent, kill = os.getpid(), int(signal.SIGKILL)

    def set_parent_death_signal() -> None:
        prctl(PR_SET_PDEATHSIG, kill, 0, 0, 0)
        if os.getppid() != parent:
            os._exit(1)

    return set_parent_death_signal


async def start(
    launch: Launch, log_path: Path, preexec: Callable[[], None] | None
) -> asyncio.subprocess.Process:
    """Start ``launch`` with its output appended to ``log_path``; OSError says what could not start."""
    with log_path.open("ab") as log:
        try:
            return await asyncio.create_subprocess_exec(
                *launch.argv,
                env=dict(launch.env),
                cwd=launch.cwd,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=preexec,
            )
        except OSError as error:
            raise OSError(f"cannot run {list(launch.argv)!r}: {error}") from None


def kill_group(pid: int, sig: signal.Signals) -> None:
    """Signal the process group ``pid`` leads (each container leads its own)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


async def _http(probe: Probe) -> tuple[bool, str]:
    context = None
    if probe.scheme == "HTTPS":
        context = ssl.create_default_context()
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE  # kubelet does not verify
    reader, writer = await asyncio.open_connection(probe.host, probe.port, ssl=context)
    try:
        lines = [
            f"GET {probe.path} HTTP/1.1",
            f"Host: {probe.host}:{probe.port}",
            f"User-Agent: {USER_AGENT}",
            "Accept: */*",
            *(f"{name}: {value}" for name, value in probe.headers),
            "Connection: close",
        ]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        await writer.drain()
        status_line = (await reader.readline()).decode("latin-1").strip()
    finally:
        writer.close()
        with contextlib.suppress(OSError, ssl.SSLError):
            await writer.wait_closed()
    parts = status_line.split(" ", 2)
    code = int(parts[1]) if len(parts) >= 2 and parts[1].isdigit() else 0
    return 200 <= code < 400, f"HTTP probe answered {status_line!r}"


async def _exec(probe: Probe, env: Mapping[str, str], cwd: str | None) -> tuple[bool, str]:
    proc = await asyncio.create_subprocess_exec(
        *probe.command,
        env=dict(env),
        cwd=cwd,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        code = await proc.wait()
    finally:
        if proc.returncode is None:
            kill_group(proc.pid, signal.SIGKILL)
            await proc.wait()
    return code == 0, f"exec {list(probe.command)!r} exited {code}"


async def attempt(
    probe: Probe, env: Mapping[str, str], cwd: str | None, timeout_s: float
) -> tuple[bool, str]:
    """Run ``probe`` once within ``timeout_s``: whether it passed, and what happened."""
    try:
        async with asyncio.timeout(timeout_s):
            if probe.kind == "http":
                return await _http(probe)
            if probe.kind == "tcp":
                _, writer = await asyncio.open_connection(probe.host, probe.port)
                writer.close()
                return True, "connected"
            if probe.kind == "exec":
                return await _exec(probe, env, cwd)
            if probe.kind == "sleep":
                await asyncio.sleep(probe.seconds)
                return True, "slept"
            return False, probe.why
    except TimeoutError:
        return False, f"{probe.kind} probe timed out after {timeout_s:g} s"
    except (OSError, ssl.SSLError) as error:
        return False, f"{probe.kind} probe of {probe.host}:{probe.port} failed: {error}"
