"""A tiny user container for the local stack: answers every request after a service time.

It stands in for a real workload where the point is the scaling machinery (tests, the cold-start
benchmark, the demo when no model can be served). It counts its own concurrency so a test can check
from the container's side that the queue-proxy never let more than containerConcurrency in at once:
``GET /_stats`` answers ``{"in_flight", "max_in_flight", "served"}`` and is not counted itself.
The service time is fixed here (``--delay``); :func:`serve` takes any per-request draw, which is how
``simulation.synthetic_app`` replays a scenario's distribution.

    python -m kpa.sample_app [--port N] [--delay SECONDS]     (PORT and SAMPLE_DELAY env work too)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
from collections.abc import Callable

import httptools

ServiceTime = Callable[[], float]


class _Counters:
    def __init__(self) -> None:
        self.in_flight = 0
        self.max_in_flight = 0
        self.served = 0


class _HttpConnection(asyncio.Protocol):
    def __init__(self, counters: _Counters, service_time: ServiceTime, name: str) -> None:
        self.counters = counters
        self.service_time = service_time
        self.name = name
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.url = b""
        self.pending: set[asyncio.Task[None]] = set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self._write(400, b"bad request\n", keep_alive=False)

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_message_complete(self) -> None:
        url, self.url = self.url, b""
        keep_alive = self.parser.should_keep_alive()
        if url == b"/_stats":
            c = self.counters
            stats = {"in_flight": c.in_flight, "max_in_flight": c.max_in_flight, "served": c.served}
            body = json.dumps(stats)
            self._write(200, body.encode(), keep_alive, "application/json")
            return
        # requests on one connection are sequential (no pipelining from our proxies), so one task at a time
        task = asyncio.get_running_loop().create_task(self._serve(keep_alive, self.service_time()))
        self.pending.add(task)
        task.add_done_callback(self.pending.discard)

    async def _serve(self, keep_alive: bool, delay: float) -> None:
        c = self.counters
        c.in_flight += 1
        c.max_in_flight = max(c.max_in_flight, c.in_flight)
        try:
            if delay > 0:
                await asyncio.sleep(delay)
        finally:
            c.in_flight -= 1
        c.served += 1
        self._write(200, f"hello from {self.name}\n".encode(), keep_alive)

    def _write(self, status: int, body: bytes, keep_alive: bool, content_type: str = "text/plain") -> None:
        if self.transport is None or self.transport.is_closing():
            return
        reason = {200: "OK", 400: "Bad Request"}[status]
        close = "" if keep_alive else "Connection: close\r\n"
        head = (
            f"HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\n{close}\r\n"
        ).encode()
        self.transport.write(head + body)
        if not keep_alive:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        for task in list(self.pending):
            task.cancel()


async def serve(port: int, service_time: ServiceTime, name: str) -> None:
    """Listen on 127.0.0.1:``port`` until SIGTERM/SIGINT; each request waits one ``service_time()`` draw."""
    loop = asyncio.get_running_loop()
    counters = _Counters()
    server = await loop.create_server(
        lambda: _HttpConnection(counters, service_time, name), "127.0.0.1", port, backlog=1024
    )
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m kpa.sample_app", description=__doc__.splitlines()[0])
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
    asyncio.run(serve(args.port, lambda: delay, name))


if __name__ == "__main__":
    main()
