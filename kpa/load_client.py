"""`kpa load`'s HTTP client: one request to one target, as many at once as a connection cap allows.

It runs on the project's HTTP engine (``httpengine.upstream.UpstreamPool``: keep-alive connections,
httptools parsing, a stale pooled connection retried once), the client side the queue-proxy and the
activator already use. httpx costs ~1.5 ms of CPU per request here and would become the bottleneck
well below the rates the demo uses.

A request never raises: whatever went wrong comes back as a ``Reply`` with status 0 and a short
reason, since a load run counts failures rather than stopping at the first.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, NamedTuple
from urllib.parse import urlsplit

from httpengine.errors import UpstreamConnectError
from httpengine.upstream import UpstreamPool

COLD_START_HEADER = b"x-kpa-cold-start"  # set by the activator: did the request wait for a pod to start?
_COLD_START_LINE = b"\r\n" + COLD_START_HEADER + b":"


@dataclass(frozen=True, slots=True)
class Target:
    """The request a load run repeats: where it goes and what it carries."""

    host: str
    port: int
    path: str = "/"
    method: str = "GET"
    host_header: str | None = None
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = ()

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> Target:
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"URL {url!r}: only http://HOST[:PORT]/PATH is supported")
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        return cls(host=parts.hostname, port=parts.port or 80, path=path, **kwargs)


class Reply(NamedTuple):
    """What one request came to (a failure is status 0 with a reason, never an exception)."""

    status: int  # 0 when no response came
    error: str = ""
    cold: bool = False
    detail: str = ""  # an error answer's (status >= 400) first body line: the server's why


DETAIL_BYTES = 200  # of an error answer's body, kept to name the failure; the rest is dropped


class Outcome:
    """The ``ResponseSink`` a load request's answer goes into: it keeps what a run counts (the status,
    whether the activator held the request for a cold start) and drops the body as it arrives, but
    for the first bytes of an error answer (status >= 400), which say why it failed.

    It takes a plain upstream head as it came (``accepts_raw``), sparing the parse of every header of
    every response: the engine's proxy fast path, here on the client side.
    """

    __slots__ = ("cold", "detail", "finished", "started", "status")
    accepts_raw = True

    def __init__(self) -> None:
        self.status = 0
        self.started = False
        self.finished = False
        self.cold = False
        self.detail = b""

    def start(
        self, status: int, headers: Iterable[tuple[bytes, bytes]] = (), content_length: int | None = None
    ) -> None:
        self.started = True
        self.status = status
        for name, value in headers:
            if name.lower() == COLD_START_HEADER:
                self.cold = value.strip().lower() == b"true"

    def start_raw(self, status: int, head: bytes) -> None:
        self.started = True
        self.status = status
        lower = head.lower()
        at = lower.find(_COLD_START_LINE)
        if at >= 0:
            at += len(_COLD_START_LINE)
            self.cold = lower[at : lower.index(b"\r\n", at)].strip() == b"true"

    def write(self, data: bytes) -> None:
        if self.status >= 400 and len(self.detail) < DETAIL_BYTES:
            self.detail += data[: DETAIL_BYTES - len(self.detail)]

    def flush(self) -> None:
        pass

    def end(self, data: bytes = b"") -> None:
        if data:
            self.write(data)
        self.finished = True

    def reason(self) -> str:
        """The error answer's first body line, or "" (a success, or an error with no body)."""
        lines = self.detail.decode("utf-8", "replace").strip().splitlines()
        return lines[0].strip() if lines else ""

    def abort(self) -> None:
        self.finished = True

    def retract(self) -> bool:
        if not self.finished:
            self.started = False
            self.status = 0
            self.cold = False
            self.detail = b""
        return not self.started

    def link_flow(self, transport: asyncio.ReadTransport | None) -> None:
        pass


class Client:
    """A keep-alive pool to one target, capped at ``max_connections`` (excess requests wait, and the
    wait counts in their latency)."""

    def __init__(self, target: Target, max_connections: int = 512, timeout: float = 30.0) -> None:
        self.target = target
        self.timeout = timeout
        self.slots = asyncio.Semaphore(max_connections)
        self.pool = UpstreamPool(
            target.host, target.port, max_idle=max_connections, connect_timeout=timeout, forwarded_for=False
        )
        self.prepared = self.pool.prepare(
            target.method.encode("latin-1"),
            target.path.encode("latin-1"),
            [(name.encode("latin-1"), value.encode("latin-1")) for name, value in target.headers],
            target.body,
            host=target.host_header.encode("latin-1") if target.host_header else None,
        )

    async def request(self) -> Reply:
        """Send the target request once; a failure is a Reply with status 0 and what went wrong."""
        outcome = Outcome()
        async with self.slots:
            try:
                async with asyncio.timeout(self.timeout):  # a timer, where wait_for would add a task
                    await self.pool.send(self.prepared, outcome)
            except TimeoutError:
                return Reply(0, "timeout")
            except OSError as exc:  # the engine's UpstreamError among them
                return Reply(0, _error_name(exc, self.pool.address))
        return Reply(outcome.status, "", outcome.cold, outcome.reason())

    def close(self) -> None:
        """Close the idle connections (a request after this opens a fresh one)."""
        self.pool.close()


def _error_name(exc: OSError, address: str) -> str:
    """A short outcome for the report: the engine's message without the address every one repeats."""
    cause = exc.__cause__
    if isinstance(cause, ConnectionRefusedError) or isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, UpstreamConnectError) and isinstance(cause, TimeoutError):
        return "timeout"
    text = str(exc) or type(exc).__name__
    for prefix in (f"cannot connect to upstream {address}: ", f"upstream {address} "):
        text = text.removeprefix(prefix)
    return text
