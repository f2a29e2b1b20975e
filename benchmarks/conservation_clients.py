"""Load for the conservation harness: N keep-alive clients on asyncio streams, in phases.

No pipelining, one request at a time per connection. A request without a complete answer by its
deadline, or whose connection closes first, is *lost* and kept with its send time, connection and
what was seen. Bytes that arrive after a complete answer and before the next request are a second
answer to one request: a violation too.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from conservation_stack import KpaUp, Status
from conservation_tally import Lost, Tally
from conservation_wire import Unanswered, buffered, read_answer


@dataclass(frozen=True)
class Phase:
    """``clients`` connections send back to back (or, with ``rate``, paced to that many requests per
    second in all) for ``seconds``. With ``until``, the phase ends as soon as the sampled /status
    satisfies it, and the pattern fails if ``seconds`` pass first. ``action`` runs when the phase starts
    (e.g. a kill) and returns a line for the report."""

    clients: int
    seconds: float
    rate: float | None = None
    until: Callable[[Status], bool] | None = None
    until_what: str = ""
    action: Callable[[KpaUp], Awaitable[str]] | None = None


class PhaseTimeout(AssertionError):
    """A phase's ``until`` state never came within its seconds."""


class RawClients:
    """Keep-alive HTTP/1.1 clients on asyncio streams that count every request and every answer."""

    def __init__(self, url: str, host: str, timeout: float, path: str = "/") -> None:
        parts = urlsplit(url)
        self.address = (parts.hostname or "127.0.0.1", parts.port or 80)
        self.request = f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: conservation\r\n\r\n".encode()
        self.timeout = timeout
        self.tally = Tally()
        self.started = time.monotonic()
        self._phase: Phase | None = None
        self._phase_changed = asyncio.Event()
        self._next_slot = 0.0

    def set_phase(self, phase: Phase | None) -> None:
        """Switch every client to ``phase`` (None: finish the request in hand, then stop)."""
        self._phase = phase
        self._next_slot = time.monotonic()
        self._phase_changed.set()
        self._phase_changed = asyncio.Event()

    async def run(self, connections: int) -> Tally:
        """Run ``connections`` clients until ``set_phase(None)``; every request sent is in the tally."""
        await asyncio.gather(*(self._client(i) for i in range(connections)))
        return self.tally

    async def _client(self, index: int) -> None:
        reader: asyncio.StreamReader | None = None
        writer: asyncio.StreamWriter | None = None
        try:
            while (phase := self._phase) is not None:
                if index >= phase.clients:
                    if writer is not None:  # idle: let the server's keep-alive timeout never matter
                        writer.close()
                        reader = writer = None
                    await self._phase_changed.wait()
                    continue
                if phase.rate:
                    await self._pace(phase.rate)
                    if self._phase is not phase:
                        continue
                if reader is not None and writer is not None and reader.at_eof():
                    writer.close()  # the server closed it while we were idle: no request went out on it
                    reader = writer = None
                if writer is None:
                    try:
                        reader, writer = await asyncio.open_connection(*self.address)
                    except OSError as exc:
                        self.tally.connect_errors.append(f"connection {index}: {exc}")
                        await asyncio.sleep(0.05)
                        continue
                assert reader is not None
                if not await self._exchange(index, reader, writer):
                    writer.close()
                    reader = writer = None
        finally:
            if writer is not None:
                writer.close()

    async def _pace(self, rate: float) -> None:
        """Take the next send slot of a shared schedule at ``rate`` req/s; if the clients fall behind,
        slots are not saved up (no burst to catch up)."""
        now = time.monotonic()
        slot = max(self._next_slot, now)
        self._next_slot = slot + 1.0 / rate
        if slot > now:
            await asyncio.sleep(slot - now)

    async def _exchange(self, index: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """Send one request and account for it; True if the connection may carry the next one."""
        tally = self.tally
        tally.sent += 1
        number = tally.sent
        sent = time.monotonic()
        since = sent - self.started
        try:
            writer.write(self.request)
            async with asyncio.timeout(self.timeout):
                answer = await read_answer(reader)
        except TimeoutError:
            tally.lost.append(Lost(number, index, since, f"no complete answer within {self.timeout:g}s"))
            return False
        except Unanswered as exc:
            tally.lost.append(
                Lost(number, index, since, f"{exc} ({time.monotonic() - sent:.3f}s after sending)")
            )
            return False
        except OSError as exc:
            tally.lost.append(Lost(number, index, since, f"{type(exc).__name__}: {exc}"))
            return False
        tally.record(since, time.monotonic() - sent, answer.status)
        if extra := buffered(reader):
            tally.lost.append(
                Lost(number, index, since, f"{extra} bytes after its complete {answer.status} answer")
            )
            tally.codes[answer.status] -= 1  # counted among the violations, not the answers
            return False
        return answer.keep_alive
