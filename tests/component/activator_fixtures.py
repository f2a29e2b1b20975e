"""Real loopback servers for the activator's component tests: pods, a fake autoscaler, a client.

The pods here are small HTTP servers on the queue-proxy's own engine that behave like a
queue-proxy toward the activator (answer ``K-Network-Probe: queue`` with ``200 queue``) and record
what reached them, so a test can count concurrency at the pod and read the headers it got.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

from queueproxy_fixtures import free_port, run

from autoscaler.stat import Stat
from httpengine.request import Request
from httpengine.response import Response
from httpengine.server import HttpServer

__all__ = ["FakeAutoscaler", "Pod", "free_port", "run"]  # run/free_port: shared with the queue-proxy tests


class Pod:
    """A pod as the activator sees it. ``mode``: "ok", "die-mid-stream", "die-before-head" or "vanish"
    (drop the request unanswered and stop listening at once, as a pod killed between requests does)."""

    def __init__(self, delay: float = 0.0, mode: str = "ok") -> None:
        self.delay = delay
        self.mode = mode
        self.in_flight = 0
        self.max_in_flight = 0
        self.served = 0
        self.probes = 0
        self.seen: list[dict[bytes, bytes]] = []
        self.bodies: list[bytes] = []
        self.server = HttpServer(self.handle, name="test-pod")
        self.port = 0

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def start(self, port: int = 0) -> Pod:
        _, self.port = await self.server.start("127.0.0.1", port)
        return self

    async def stop(self) -> None:
        """Stop listening and drop its connections; again is harmless (a test may stop it first)."""
        await self.server.shutdown(grace=0.0)

    async def __aenter__(self) -> Pod:
        """``async with Pod() as pod``: listening on a free port, stopped however the test ends."""
        return await self.start()

    async def __aexit__(self, *_: object) -> None:
        await self.stop()

    async def handle(self, request: Request, response: Response) -> None:
        if request.header(b"k-network-probe") == b"queue":
            self.probes += 1
            response.send(200, b"queue")
            return
        self.seen.append(dict(request.headers))
        self.bodies.append(await request.body.read_all(1 << 20))
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.mode == "die-before-head":
                response.abort()
                return
            if self.mode == "vanish":
                self.server.stop_accepting()
                response.abort()
                return
            if self.mode == "die-mid-stream":
                response.start(200, [(b"content-type", b"text/plain")])
                response.write(b"partial answer ")
                await asyncio.sleep(0.05)
                response.abort()
                return
            await asyncio.sleep(self.delay)
            self.served += 1
            response.send(200, b"served by %d\n" % self.port)
        finally:
            self.in_flight -= 1


class FakeAutoscaler:
    """Accepts the activator's stat pushes (POST /stats) and keeps them, validated, in arrival order."""

    def __init__(self) -> None:
        self.batches: list[list[tuple[str, str, Stat]]] = []
        self.arrived = asyncio.Event()
        self.server = HttpServer(self.handle, name="fake-autoscaler")
        self.url = ""

    async def start(self) -> FakeAutoscaler:
        _, port = await self.server.start("127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{port}/stats"
        return self

    async def stop(self) -> None:
        await self.server.shutdown(grace=0.0)

    async def __aenter__(self) -> FakeAutoscaler:
        return await self.start()

    async def __aexit__(self, *_: object) -> None:
        await self.stop()

    async def handle(self, request: Request, response: Response) -> None:
        doc: Any = json.loads(await request.body.read_all(1 << 20))
        batch = [(item["namespace"], item["revision"], Stat.from_json(item["stat"])) for item in doc]
        self.batches.append(batch)
        self.arrived.set()
        response.send(202, b"")

    def stats(self) -> list[tuple[str, str, Stat]]:
        return [entry for batch in self.batches for entry in batch]

    async def wait_for(self, predicate: Callable[[list[tuple[str, str, Stat]]], bool], timeout: float):
        async with asyncio.timeout(timeout):
            while not predicate(self.stats()):
                self.arrived.clear()
                await self.arrived.wait()
