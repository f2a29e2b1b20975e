"""Payload-logger sinks on 127.0.0.1 for the tests: one that records every CloudEvent it is sent, one
that accepts connections and never answers, and the address of one that is not there at all."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass

from httpengine.request import Request
from httpengine.response import Response
from httpengine.server import HttpServer


@dataclass
class Received:
    """One POST the sink got: its target, its headers (lower-case names) and its body."""

    target: str
    headers: dict[str, str]
    body: bytes

    @property
    def type(self) -> str:
        return self.headers.get("ce-type", "")

    @property
    def id(self) -> str:
        return self.headers.get("ce-id", "")


class RecordingSink:
    """An HTTP server that keeps every event in arrival order and answers 200 (or ``status``)."""

    def __init__(self, status: int = 200) -> None:
        self.events: list[Received] = []
        self.status = status
        self.arrived = asyncio.Event()
        self.server = HttpServer(self._handle, name="sink")
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/events"

    async def _handle(self, request: Request, response: Response) -> None:
        body = await request.body.read_all(64 * 1024 * 1024)
        headers = {name.decode().lower(): value.decode("latin-1") for name, value in request.headers}
        self.events.append(Received(request.target.decode(), headers, body))
        self.arrived.set()
        response.send(self.status, b"")

    async def __aenter__(self) -> RecordingSink:
        _, self.port = await self.server.start("127.0.0.1", 0)
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.server.shutdown(0.0)


@contextlib.asynccontextmanager
async def hanging_sink() -> AsyncIterator[tuple[str, list[int]]]:
    """A sink that accepts every connection, reads what comes and never answers: its URL, and a list
    that grows by one per connection accepted."""
    accepted: list[int] = []
    held: list[asyncio.StreamWriter] = []

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(1)
        held.append(writer)
        with contextlib.suppress(ConnectionError):
            while await reader.read(65536):
                pass

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}/", accepted
    finally:
        for writer in held:
            writer.close()
        server.close()


def dead_sink_url() -> str:
    """A loopback port nothing listens on: every connection is refused."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/"
