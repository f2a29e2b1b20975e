"""`kpa up CONFIG.yaml`: the command shell of the embedded local stack (``localbackend.stack``) —
arguments, the live table or log lines, signals, the ready file.

    kpa up examples/stack/hello.yaml [--port 8080] [--admin-port 8081] [--no-live]

The stack's entry routes by ``Host`` or the path prefix ``/r/<revision>/`` (docs/local-stack.md).
Its admin port listens on ``--admin-host`` (loopback unless told otherwise, whatever ``--host``
is), and every call but a GET needs ``Authorization: Bearer <admin token>``: the token of
``--admin-token-file`` or ``KPA_ADMIN_TOKEN``, else one generated at start and written to the
``--ready-file`` (mode 0600); see docs/security.md.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import contextlib
import json
import logging
import os
import signal
import sys
import tempfile
from pathlib import Path

from httpengine.limits import raise_fd_limit
from kpa.argtypes import positive_int
from localbackend.stack import DEFAULT_ADMIN_PORT, DEFAULT_PORT, LOOPBACK, LocalStack
from localbackend.stack_file import StackConfig, StackConfigError, load_stack
from queueproxy.auth import ADMIN_TOKEN_ENV, AuthConfigError
from queueproxy.gate import load_admin_token

log = logging.getLogger("kpa.up")


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="stack file (YAML), see docs/local-stack.md")
    parser.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help=f"entry port (default {DEFAULT_PORT}; 0 = any)"
    )
    parser.add_argument(
        "--admin-port",
        type=int,
        default=DEFAULT_ADMIN_PORT,
        help=f"status/metrics port (default {DEFAULT_ADMIN_PORT}; 0 = any)",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address of the entry (default 127.0.0.1)")
    parser.add_argument(
        "--admin-host",
        default=LOOPBACK,
        help="address of the admin port (default 127.0.0.1 whatever --host is; see docs/security.md)",
    )
    parser.add_argument(
        "--admin-token-file",
        metavar="FILE",
        help=f"file whose first line is the admin token (else env {ADMIN_TOKEN_ENV}, else a new one "
        "written to --ready-file)",
    )
    parser.add_argument("--no-live", action="store_true", help="log lines instead of the live table")
    parser.add_argument("--log-dir", help="where pod output goes (default: a new temporary directory)")
    parser.add_argument(
        "--max-pods",
        type=positive_int,
        metavar="N",
        help="at most N pods at once across all revisions; the rest are pending "
        "(default: the stack file's maxPods, else 4 per core within available memory)",
    )
    parser.add_argument(
        "--prometheus-targets",
        metavar="FILE",
        help="the Prometheus file_sd target file kept true while pods come and go "
        "(default: prometheus-targets.json in the log directory); see docs/metrics.md",
    )
    parser.add_argument(
        "--ready-file",
        help="write {entry, admin, admin_token, prometheus_targets, pid} as JSON here once listening "
        "(file mode 0600)",
    )
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])


def run(args: argparse.Namespace) -> int:
    try:
        stack_config = load_stack(args.config)
    except StackConfigError as exc:
        print(f"kpa up: {exc}", file=sys.stderr)
        return 2
    import uvloop

    raise_fd_limit()  # connection caps are derived from the raised limit; pods inherit it
    try:
        return uvloop.run(_main(args, stack_config))
    except KeyboardInterrupt:
        return 130


async def _main(args: argparse.Namespace, stack_config: StackConfig) -> int:
    from rich.console import Console

    console = Console(stderr=args.no_live)
    _setup_logging(args, console)
    try:
        admin_token = load_admin_token(args.admin_token_file, os.environ)
    except AuthConfigError as exc:
        console.print(f"kpa up: {exc}")
        return 2
    os.environ.pop(ADMIN_TOKEN_ENV, None)  # pods inherit this environment: they must not get the token
    log_dir = Path(args.log_dir or tempfile.mkdtemp(prefix="kpa-up-"))
    stack = LocalStack(
        stack_config,
        host=args.host,
        port=args.port,
        admin_port=args.admin_port,
        admin_host=args.admin_host,
        admin_token=admin_token,
        # The CLI keeps pod logs after it exits (the path is printed), so it makes the directory.
        log_dir=log_dir,
        max_pods=args.max_pods,
        prometheus_targets=args.prometheus_targets or log_dir / "prometheus-targets.json",
    )
    atexit.register(stack.actuator.kill_all)  # if anything below dies unexpectedly, no pod survives us
    stop = asyncio.Event()

    def on_signal() -> None:
        stack.actuator.stop_spawning()  # at once, before the graceful part of the stop begins
        if stop.is_set():  # a second Ctrl-C: no more patience for drains
            log.warning("stopping now: killing every pod")
            stack.actuator.kill_all()
        stop.set()

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal)
    try:
        try:
            await stack.start()
        except OSError as exc:
            console.print(f"kpa up: cannot start: {exc}")
            return 1
        names = ", ".join(r.name for r in stack.refs)
        console.print(
            f"kpa up: entry [bold]{stack.entry_url}[/] (revisions: {names}) — pick one with "
            f"Host: <revision> or the path prefix /r/<revision>/\n"
            f"        admin {stack.admin_url} (/status, /metrics); pod logs in {stack.log_dir}\n"
            f"        Prometheus targets (file_sd) in {stack.targets.path if stack.targets else '-'}\n"
            f"        at most {stack.actuator.max_pods} pods at once (--max-pods); more are pending"
        )
        if args.ready_file:
            ready = {
                "entry": stack.entry_url,
                "admin": stack.admin_url,
                "admin_token": stack.admin_token,
                "prometheus_targets": str(stack.targets.path) if stack.targets else None,
            }
            write_private(Path(args.ready_file), json.dumps({**ready, "pid": os.getpid()}) + "\n")
        if args.no_live:
            await _log_until(stop, stack)
        else:
            await _live_until(stop, stack, console)
    finally:
        log.info("stopping: draining requests and stopping pods")
        await stack.stop()
        atexit.unregister(stack.actuator.kill_all)
    console.print(f"kpa up: stopped; no pods left running; pod logs kept in {stack.log_dir}")
    return 0


def write_private(path: Path, text: str) -> None:
    """Write ``text`` readable by its owner only (mode 0600), atomically: a reader polling for the file
    sees nothing or all of it, and never through a link someone left at the temporary name."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.unlink(missing_ok=True)
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    os.replace(temporary, path)


def _setup_logging(args: argparse.Namespace, console) -> None:
    level = args.log_level.upper()
    if args.no_live:
        logging.basicConfig(
            level=level, format="%(asctime)s %(name)s %(levelname)s %(message)s", stream=sys.stderr
        )
    else:
        from rich.logging import RichHandler

        logging.basicConfig(
            level=level, format="%(message)s", handlers=[RichHandler(console=console, show_path=False)]
        )
    for noisy in ("httpx", "httpcore", "activator.revisions", "activator.forwarding"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


async def _log_until(stop: asyncio.Event, stack: LocalStack) -> None:
    from kpa.status import summarize_rows

    last = ""
    while not stop.is_set():
        line = summarize_rows(stack.status()["revisions"])
        if line != last:
            log.info("%s", line)
            last = line
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(1.0):
                await stop.wait()


async def _live_until(stop: asyncio.Event, stack: LocalStack, console) -> None:
    from rich.live import Live

    from kpa.status import status_table

    with Live(status_table(stack.status(), console.width), console=console, refresh_per_second=4) as live:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.5):
                    await stop.wait()
            live.update(status_table(stack.status(), console.width))
