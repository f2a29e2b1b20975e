"""Flow control for the engine's connections: wait while the peer does not read, and make a proxy's other
side wait too.

asyncio calls ``pause_writing`` when a transport's write buffer passes its high-water mark and
``resume_writing`` when it drains. Both connection classes (a server's client connection and a pooled
upstream connection) inherit this: a writer awaits ``drained()`` before sending more, and a server
connection ``link_flow``s the upstream transport it forwards from, whose reading then pauses while the
client is not reading, so a response is never held whole.
"""

from __future__ import annotations

import asyncio


class FlowControlled(asyncio.Protocol):
    """A protocol whose writes may be paused; ``closed`` ends every wait."""

    __slots__ = ("_drain_waiter", "_flow", "_flow_paused", "_write_paused", "closed")

    def __init__(self) -> None:
        self.closed = False
        self._write_paused = False
        self._drain_waiter: asyncio.Future[None] | None = None
        self._flow: asyncio.ReadTransport | None = None  # the linked transport, paused along
        self._flow_paused = False

    def pause_writing(self) -> None:
        self._write_paused = True
        if self._flow is not None and not self._flow_paused:
            self._flow_paused = True
            self._flow.pause_reading()

    def resume_writing(self) -> None:
        self._write_paused = False
        self._wake_drain()
        self._resume_flow()

    async def drained(self) -> None:
        """Return once the peer reads again (at once if it does, or once the connection closed)."""
        while self._write_paused and not self.closed:
            self._drain_waiter = asyncio.get_running_loop().create_future()
            await self._drain_waiter

    def _wake_drain(self) -> None:
        waiter = self._drain_waiter
        if waiter is not None:
            self._drain_waiter = None
            if not waiter.done():
                waiter.set_result(None)

    def link_flow(self, transport: asyncio.ReadTransport | None) -> None:
        """Pause ``transport``'s reading whenever this peer stops reading (None unlinks)."""
        if self._flow_paused or (transport is not None and self._write_paused):
            self._relink_flow(transport)
        else:
            self._flow = transport

    def _relink_flow(self, transport: asyncio.ReadTransport | None) -> None:
        self._resume_flow()
        self._flow = transport
        if transport is not None and self._write_paused:
            self._flow_paused = True
            transport.pause_reading()

    def _resume_flow(self) -> None:
        flow = self._flow
        if self._flow_paused and flow is not None:  # paused only while linked
            self._flow_paused = False
            if not flow.is_closing():
                flow.resume_reading()
