"""The predictor process: bind, serve HTTP, load the repository, watch it, shut down cleanly.

The socket is bound before any model loads, so the caller learns the port at once (one JSON line on
stdout: ``{"event": "listening", "port": ...}``) and can poll ``/v2/health/ready``; a second line
``{"event": "ready", ...}`` reports start-to-ready time. SIGTERM/SIGINT stop accepting, finish
responses in flight (up to ``grace_s``), and stop any compiler child this process started — even
while the first models are still loading or compiling.

HTTP is served by the engine the queue-proxy and the activator run on (``httpengine``), so the
predictor meets hostile clients with the same ``Limits`` as they do (docs/wire-contracts.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from httpengine.limits import Limits
from httpengine.server import HttpServer
from predictor.backends import probe_platform
from predictor.compile_cache import CompileCache
from predictor.grpc_server import start_grpc
from predictor.http_app import PredictorApp
from predictor.loader import VersionLoader
from predictor.manager import ModelManager
from predictor.model_cache import Budget
from predictor.repository import Repository
from predictor.watcher import watch_repository

if TYPE_CHECKING:
    from opentelemetry.trace import Tracer

log = logging.getLogger("predictor")


@dataclass(frozen=True)
class ServerOptions:
    repository: Path
    cache_dir: Path
    host: str = "127.0.0.1"
    port: int = 8080
    watch: bool = False
    watch_quiet_ms: int = 200
    limits: Limits = field(default_factory=Limits)  # sizes, timeouts, connection cap (one set for all)
    grace_s: float = 30.0  # how long requests in flight may take to finish at shutdown
    grpc_port: int | None = None  # V2 gRPC inference; None: off (predictor/grpc_server.py)
    modelmesh_port: int | None = None  # ModelMesh's runtime SPI and inference; None: off
    budget: Budget = field(default_factory=Budget)  # many models per pod: load on demand within it (LRU)
    room_wait_s: float = 30.0  # how long a load waits for busy models to free room before a 503


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


async def serve(
    options: ServerOptions,
    on_event: Callable[[dict[str, Any]], None] = announce,
    stop: asyncio.Event | None = None,
    tracer: Tracer | None = None,
) -> None:
    """Serve until SIGTERM/SIGINT or until ``stop`` is set (how an embedding program stops it); with a
    ``tracer``, inference requests make spans (predictor.tracing, docs/tracing.md)."""
    loop = asyncio.get_running_loop()
    manager = ModelManager(
        Repository(options.repository),
        VersionLoader(CompileCache(options.cache_dir), probe_platform()),
        options.budget,
        options.room_wait_s,
    )
    if tracer is None:
        app = PredictorApp(manager, options.limits)
    else:
        from predictor.tracing import TracedPredictorApp  # OpenTelemetry is imported only when tracing

        app = TracedPredictorApp(manager, options.limits, tracer=tracer)
    server = HttpServer(app, limits=options.limits, name="predictor")
    host, port = await server.start(options.host, options.port)
    try:
        grpc_servers = await start_grpc(
            manager,
            options.host,
            options.grpc_port,
            options.modelmesh_port,
            options.limits.max_body_bytes,
            app.metrics,
            options.budget.memory_bytes,
        )
    except BaseException:
        await server.shutdown(grace=0)
        raise
    stop = stop or asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, stop.set)
    on_event({"event": "listening", "host": host, "port": port, **grpc_servers.ports, "pid": os.getpid()})
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
        await asyncio.gather(server.shutdown(grace=options.grace_s), grpc_servers.stop(options.grace_s))
        if watcher is not None:
            await asyncio.gather(watcher, return_exceptions=True)
        await manager.close()
