"""`kpa up` as its own process for the conservation harness: ports chosen by the kernel
(``--ready-file``), its ``/status``, each pod's queue-proxy and user container found and SIGKILLed on
demand, the RSS and descriptors of every process, and on exit a check that no pod process it saw
survives.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import textwrap
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
from conservation_wire import get_json

Status = dict[str, Any]
"""A row or document of `kpa up`'s admin ``/status``."""


@dataclass(frozen=True)
class PodProcesses:
    """One pod's two processes, paired by the user container's port (the queue-proxy's USER_PORT)."""

    queue_proxy: int
    user: int
    user_port: int


@dataclass(frozen=True)
class Usage:
    rss: int  # bytes
    fds: int


def usage(pid: int) -> Usage:
    process = psutil.Process(pid)
    return Usage(process.memory_info().rss, process.num_fds())


def _environ(pid: int) -> dict[str, str]:
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return {}
    return dict(item.split("=", 1) for item in raw.decode(errors="replace").split("\0") if "=" in item)


class KpaUp:
    """`kpa up STACK --port 0 --admin-port 0 --no-live --ready-file ...` as a child process."""

    def __init__(self, stack_text: str, workdir: Path, *, revision: str) -> None:
        self.stack_text = textwrap.dedent(stack_text)
        self.workdir = workdir
        self.revision = revision
        self.pid = 0
        self.entry = ""
        self.admin = ""
        self.seen_pids: set[int] = set()
        self.killed: list[str] = []
        self._proc: asyncio.subprocess.Process | None = None

    async def __aenter__(self) -> KpaUp:
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "stack.yaml"
        config.write_text(self.stack_text)
        ready = self.workdir / "ready.json"
        ready.unlink(missing_ok=True)
        with (self.workdir / "kpa-up.log").open("ab") as log:
            self._proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "kpa", "up", str(config), "--port", "0", "--admin-port", "0",
                "--no-live", "--ready-file", str(ready), "--log-dir", str(self.workdir / "pods"),
                stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=log,
            )  # fmt: skip
        self.pid = self._proc.pid
        deadline = time.monotonic() + 30
        while not ready.exists() or not ready.read_text().endswith("\n"):
            if self._proc.returncode is not None or time.monotonic() > deadline:
                await self._stop()
                raise RuntimeError(f"kpa up did not start: {self.log_tail()}")
            await asyncio.sleep(0.05)
        doc = json.loads(ready.read_text())
        self.entry, self.admin = doc["entry"], doc["admin"]
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._stop()

    async def _stop(self) -> None:
        """SIGTERM kpa up (by its pid), SIGKILL after 20 s; then no pod process it ran may survive."""
        proc = self._proc
        if proc is None:
            return
        with contextlib.suppress(Exception):
            self.seen_pids.update((await self.status())["pod_pids"])
        if proc.returncode is None:
            proc.terminate()
            try:
                async with asyncio.timeout(20):
                    await proc.wait()
            except TimeoutError:
                proc.kill()
                await proc.wait()
                raise AssertionError(f"kpa up ignored SIGTERM for 20 s: {self.log_tail()}") from None
        deadline = time.monotonic() + 5
        while survivors := [pid for pid in self.seen_pids if _alive(pid)]:
            if time.monotonic() > deadline:
                for pid in survivors:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                raise AssertionError(f"pod processes left running after kpa up stopped: {survivors}")
            await asyncio.sleep(0.05)

    def log_tail(self, lines: int = 20) -> str:
        with contextlib.suppress(OSError):
            return "\n".join((self.workdir / "kpa-up.log").read_text(errors="replace").splitlines()[-lines:])
        return ""

    async def status(self) -> Status:
        doc = await get_json(self.admin + "/status")
        self.seen_pids.update(doc.get("pod_pids", []))
        return doc

    def row(self, status: Status) -> Status:
        return next(r for r in status["revisions"] if r["name"] == self.revision)

    async def pods(self) -> list[PodProcesses]:
        """The live pods' processes, from /status's pod pids and each process's environment."""
        pids = (await self.status())["pod_pids"]
        proxies: dict[int, int] = {}
        users: dict[int, int] = {}
        for pid in pids:
            env = _environ(pid)
            if "USER_PORT" in env and "SERVING_POD" in env:
                proxies[int(env["USER_PORT"])] = pid
            elif env.get("PORT", "").isdigit():
                users[int(env["PORT"])] = pid
        return [PodProcesses(proxies[port], users[port], port) for port in sorted(proxies) if port in users]

    def usage(self) -> Usage:
        return usage(self.pid)

    async def kill(self, which: str, choose: Callable[[Sequence[PodProcesses]], PodProcesses]) -> str:
        """SIGKILL one pod's ``"user"`` container or ``"queue-proxy"`` (picked by ``choose``)."""
        pods = await self.pods()
        if not pods:
            raise AssertionError(f"no pod to kill the {which} of")
        pod = choose(pods)
        pid = pod.user if which == "user" else pod.queue_proxy
        os.kill(pid, signal.SIGKILL)
        line = f"SIGKILL {which} pid {pid} (pod with user port {pod.user_port})"
        self.killed.append(line)
        return line


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def kill_action(which: str) -> Callable[[KpaUp], Awaitable[str]]:
    """A phase action: SIGKILL the ``which`` process of the first pod (lowest user port)."""

    async def action(up: KpaUp) -> str:
        return await up.kill(which, lambda pods: pods[0])

    return action
