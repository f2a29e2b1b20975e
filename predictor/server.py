"""The predictor process: bind, serve HTTP, load the repository, watch it, shut down cleanly.

The socket is bound before any model loads, so the caller learns the port at once (one JSON line on
stdout: ``{"event": "listening", "port": ...}``) and can poll ``/v2/health/ready``; a second line
``{"event": "ready", ...}`` reports start-to-ready time. SIGTERM/SIGINT stop accepting, finish
responses in flight (up to ``grace_s``), and stop any compiler child this process started — even
while the first models are still loading or compiling.
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
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from predictor.backends import probe_platform
from predictor.compile_cache import CompileCache
from predictor.http_app import PredictorApp
from predictor.http_server import HttpServer
from predictor.loader import VersionLoader
from predictor.manager import ModelManager
from predictor.repository import Repository
from predictor.watcher import watch_repository

log = logging.getLogger("predictor")


@dataclass(frozen=True)
class ServerOptions:
    repository: Path
    cache_dir: Path
    host: str = "127.0.0.1"
    port: int = 8080
    watch: bool = False
    watch_quiet_ms: int = 200
    keep_alive_s: float = 75.0
    grace_s: float = 30.0  # how long requests in flight may take to finish at shutdown


def announce(event: dict[str, Any]) -> None:
    """One machine-readable line on stdout for whoever started this process."""
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


def process_age_s() -> float:
    """Seconds since this process started (from /proc; falls back to time since import)."""
    try:
        with open("/proc/self/stat") as stat:
            start_ticks = int(stat.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/uptime") as uptime:
            return float(uptime.read().split()[0]) - start_ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return time.monotonic() - _IMPORTED


_IMPORTED = time.monotonic()


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(1024)
    sock.setblocking(False)
    return sock


async def serve(options: ServerOptions, on_event: Callable[[dict[str, Any]], None] = announce) -> None:
    loop = asyncio.get_running_loop()
    manager = ModelManager(
        Repository(options.repository), VersionLoader(CompileCache(options.cache_dir), probe_platform())
    )
    sock = bind(options.host, options.port)
    app = PredictorApp(manager)
    server = HttpServer(app, keep_alive_s=options.keep_alive_s)
    app.requests_in_progress = lambda: server.in_progress
    await server.start(sock)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, stop.set)
    host, port = sock.getsockname()[:2]
    on_event({"event": "listening", "host": host, "port": port, "pid": os.getpid()})
    watcher = None
    starting = loop.create_task(manager.load_repository())
    stopping = loop.create_task(stop.wait())
    try:
        await asyncio.wait([starting, stopping], return_when=asyncio.FIRST_COMPLETED)
        if starting.done():
            starting.result()
            seconds = process_age_s()
            log.info(
                "ready %.2f s after process start: %s", seconds, ", ".join(manager.names()) or "no models"
            )
            on_event({"event": "ready", "seconds_since_start": round(seconds, 3), "models": manager.index()})
            if options.watch:
                watcher = loop.create_task(watch_repository(manager, stop, options.watch_quiet_ms))
            await stopping
    finally:
        stop.set()
        starting.cancel()
        log.info("shutting down")
        await server.shutdown(grace=options.grace_s)
        if watcher is not None:
            await asyncio.gather(watcher, return_exceptions=True)
        await manager.close()
        sock.close()
