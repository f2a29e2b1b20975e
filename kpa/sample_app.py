"""A tiny user container for the local stack: answers every request after a service time.

It stands in for a real workload where the point is the scaling machinery (tests, the cold-start
benchmark, the demo when no model can be served). It counts its own concurrency so a test can check
from the container's side that the queue-proxy never let more than containerConcurrency in at once:
``GET /_stats`` answers ``{"in_flight", "max_in_flight", "served"}`` and is not counted itself.
The service time is fixed here (``--delay``); :func:`serve` takes any per-request draw, which is how
``kpa.synthetic_app`` replays a scenario's distribution. It runs on the HTTP engine of the
queue-proxy (``httpengine``), so it has the same HTTP limits as every other server of ours.

    python -m kpa.sample_app [--host 127.0.0.1] [--port N] [--delay SECONDS]   (PORT, SAMPLE_DELAY env too)

In a pod, give ``--host 0.0.0.0`` (the pod's address: the queue-proxy reaches it there).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
from collections.abc import Awaitable, Callable

from httpengine.limits import Limits, raise_fd_limit
from httpengine.request import Request
from httpengine.response import Response
from httpengine.server import HttpServer

ServiceTime = Callable[[], float]


class SampleApp:
    """The handler: ``/_stats`` at once, anything else after one service-time draw."""

    def __init__(self, service_time: ServiceTime, name: str) -> None:
        self.service_time = service_time
        self.body = f"hello from {name}\n".encode()
        self.in_flight = 0
        self.max_in_flight = 0
        self.served = 0

    def __call__(self, request: Request, response: Response) -> Awaitable[None] | None:
        if request.target == b"/_stats":
            stats = {"in_flight": self.in_flight, "max_in_flight": self.max_in_flight, "served": self.served}
            response.send(200, json.dumps(stats).encode(), content_type=b"application/json")
            return None
        return self._serve(response, self.service_time())

    async def _serve(self, response: Response, delay: float) -> None:
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if delay > 0:
                await asyncio.sleep(delay)
        finally:
            self.in_flight -= 1
        self.served += 1
        response.send(200, self.body)


async def start(
    port: int, service_time: ServiceTime, name: str, limits: Limits | None = None, host: str = "127.0.0.1"
) -> HttpServer:
    """The app listening on ``host``:``port`` (0 picks a free one: see the server's ``port``)."""
    server = HttpServer(SampleApp(service_time, name), limits=limits, name=name)
    await server.start(host, port, backlog=1024)
    return server


async def serve(port: int, service_time: ServiceTime, name: str, host: str = "127.0.0.1") -> None:
    """Listen on ``host``:``port`` until SIGTERM/SIGINT; each request waits one ``service_time()`` draw."""
    loop = asyncio.get_running_loop()
    server = await start(port, service_time, name, host=host)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.shutdown(grace=0.0)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m kpa.sample_app", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8080")))
    parser.add_argument(
        "--delay",
        type=float,
        default=float(os.environ.get("SAMPLE_DELAY", "0")),
        help="service time per request, seconds",
    )
    args = parser.parse_args()
    name = os.environ.get("SERVING_POD", f"sample-app:{args.port}")
    delay = args.delay
    raise_fd_limit()
    asyncio.run(serve(args.port, lambda: delay, name, args.host))


if __name__ == "__main__":
    main()
