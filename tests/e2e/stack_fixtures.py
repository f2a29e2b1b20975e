"""Helpers for end-to-end tests of the local stack: real pods (queue-proxy + sample app processes),
the real autoscaler service, activator and entry, all on loopback with free ports.

The stack runs in the test's own event loop (``run`` drives a coroutine under uvloop), so a test can
read its state directly while ``kpa.load`` sends traffic through the entry like any client.
"""

from __future__ import annotations

import contextlib
import json
import os
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import uvloop

from autoscaler.stat import RevisionKey
from kpa.load import Client, Target
from localbackend.stack import LocalStack
from localbackend.stack_file import parse_stack

REVISION = RevisionKey("default", "hello")


def stack_text(
    *,
    delay: float,
    cc: int,
    annotations: dict[str, str] | None = None,
    config: dict[str, str] | None = None,
    command: list[str] | None = None,
) -> str:
    """A one-revision stack file for the sample app; short windows so tests run in seconds."""
    base = {"stable-window": "6s", "scale-to-zero-grace-period": "1s", "panic-window-percentage": "50"}
    base.update(config or {})
    lines = ["config:"] + [f"  {k}: '{v}'" for k, v in base.items()]
    lines += [
        "revisions:",
        "  - name: hello",
        f"    command: {json.dumps(command or ['python', '-m', 'kpa.sample_app', '--delay', str(delay)])}",
        f"    containerConcurrency: {cc}",
        "    timeoutSeconds: 30",
        "    startupTimeoutSeconds: 20",
    ]
    if annotations:
        lines.append("    annotations:")
        lines += [f"      autoscaling.knative.dev/{k}: '{v}'" for k, v in annotations.items()]
    return "\n".join(lines) + "\n"


@contextlib.asynccontextmanager
async def running_stack(text: str, log_dir: Path) -> AsyncIterator[LocalStack]:
    """Start a LocalStack from stack-file text; on exit stop it and check no pod process survived."""
    stack = LocalStack(
        parse_stack(textwrap.dedent(text), "test-stack.yaml"), port=0, admin_port=0, log_dir=log_dir
    )
    pids: set[int] = set()
    try:
        await stack.start()
        yield stack
    finally:
        pids.update(stack.actuator.process_ids())
        await stack.stop()
        survivors = [pid for pid in pids if _alive(pid)]
        assert not survivors, f"processes left running after stop: {survivors}"


def target(stack: LocalStack, path: str = "/") -> Target:
    return Target.from_url(stack.entry_url + path, host_header="hello")


def client(stack: LocalStack, timeout: float = 30.0) -> Client:
    return Client(target(stack), max_connections=256, timeout=timeout)


def row(stack: LocalStack) -> dict[str, Any]:
    return stack.service.status()[0].to_json()


def run(coro) -> Any:
    return uvloop.run(coro)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    return True
