"""The controller's control-plane HTTP: status, the activators' stat push, metrics, health.

Low-rate endpoints, so they are served by FastAPI on uvicorn (issue 12: the project's own engine is
for the request data path), on the controller's event loop — the handlers read the autoscaler
service directly, with no lock and no thread:

* ``GET /status`` — the revisions' rows in the same shape as `kpa up`'s ``/status`` (so
  ``kpa status --controller URL`` shows them with the same table), plus what only a cluster has:
  whether this replica leads, workloads refused and why, the ConfigMap's error, the watches.
* ``POST /stats`` — the activators push ``[{namespace, revision, stat}, ...]``, the wire format
  `kpa up` accepts (``autoscaler.service.parse_stat_push`` reads both, with the same errors); a
  replica that does not lead answers 503 so an activator's push is not silently lost on a standby.
  The body is read as JSON and checked by that parser rather than by a pydantic model: one reading
  of the wire format, one set of error messages, whichever backend answers.
* ``GET /metrics`` — Prometheus text: the autoscaler service's families and the controller's own.
* ``GET /healthz`` — ``ok`` while the process serves (kubelet's liveness probe).
* ``GET /readyz`` — ``ok`` once the replica can answer the API server (kubelet's readiness probe):
  every watch has listed and, where the command runs one, the webhook listens; else 503 saying what
  it waits for. Until then Service ``kpa-controller`` does not send it the webhook's calls: a pod
  created meanwhile is not admitted without its queue-proxy because one replica was still starting.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import Iterator
from typing import Any, Protocol

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response

from autoscaler.service import parse_stat_push
from autoscaler.stat import RevisionKey, Stat, StatError

MAX_PUSH_BYTES = 1 << 20  # an activator's push for thousands of revisions is well under this
PROMETHEUS_TEXT = "text/plain; version=0.0.4; charset=utf-8"
START_TIMEOUT_S = 10.0


class ControllerView(Protocol):
    """What the status API needs of the controller."""

    @property
    def leading(self) -> bool: ...

    def status(self) -> dict[str, Any]: ...

    def record_pushed(self, entries: list[tuple[RevisionKey, Stat]]) -> None: ...

    async def metrics(self) -> bytes: ...

    def not_ready(self) -> list[str]: ...


def create_app(controller: ControllerView) -> FastAPI:
    app = FastAPI(title="kpa controller", summary="status, stat push and metrics of `kpa controller`")

    @app.get("/status")
    async def status() -> JSONResponse:
        return JSONResponse(controller.status())

    @app.post("/stats")
    async def stats(request: Request) -> JSONResponse:
        if not controller.leading:
            return JSONResponse(
                {
                    "error": "this controller replica is not the leader; push to Service "
                    "kpa-controller-leader (it selects the leader's pod only)"
                },
                status_code=503,
            )
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_PUSH_BYTES:
                return JSONResponse({"error": f"stat push over {MAX_PUSH_BYTES} bytes"}, status_code=413)
        try:
            entries = parse_stat_push(json.loads(body))
        except (ValueError, StatError) as error:
            return JSONResponse({"error": str(error)}, status_code=400)
        controller.record_pushed(entries)
        return JSONResponse({"accepted": len(entries)})

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(await controller.metrics(), media_type=PROMETHEUS_TEXT)

    @app.get("/healthz")
    async def healthz() -> PlainTextResponse:
        return PlainTextResponse("ok\n")

    @app.get("/readyz")
    async def readyz() -> PlainTextResponse:
        waiting = controller.not_ready()
        if waiting:
            return PlainTextResponse("not ready: " + "; ".join(waiting) + "\n", status_code=503)
        return PlainTextResponse("ok\n")

    return app


class _LoopServer(uvicorn.Server):
    """uvicorn on a loop it does not own: the command (kpa controller) handles the signals."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class StatusServer:
    """The status API served on the running event loop at ``host:port`` (port 0: any free one)."""

    def __init__(self, controller: ControllerView, host: str = "0.0.0.0", port: int = 8080) -> None:
        config = uvicorn.Config(
            create_app(controller),
            http="h11",
            loop="none",
            lifespan="off",
            log_level="warning",
            access_log=False,
            timeout_graceful_shutdown=1,
        )
        self._server = _LoopServer(config)
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind((host, port))
        self._socket.listen(128)
        self.host = host
        self.port: int = self._socket.getsockname()[1]
        self._task: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        return f"http://{host}:{self.port}"

    async def start(self) -> None:
        self._task = asyncio.create_task(self._server.serve(sockets=[self._socket]), name="status api")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + START_TIMEOUT_S
        while not self._server.started:
            if self._task.done() or loop.time() > deadline:
                await self.stop()
                raise RuntimeError(f"the status API on {self.host}:{self.port} did not start")
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        self._server.should_exit = True
        if self._task is not None:
            with contextlib.suppress(Exception):
                await self._task
        self._socket.close()
