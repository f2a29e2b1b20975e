"""Requests through a Service on the fake cluster, each on a new TCP connection, counted one by one.

Each request opens its own connection to a ``ServiceProxy`` (kube-proxy's part: one random ready
endpoint per connection), so a flip of the Service's EndpointSlice reaches the very next request —
a keep-alive pool would stay pinned to the endpoints it first connected to, as a client's does on a
cluster. A request ends as one of:

* ``answered`` — a complete HTTP response (head and the whole body), whatever its status;
* ``cut`` — its connection broke with no complete response after the proxy had delivered it to an
  endpoint: a server held it when the connection broke (a killed pod);
* ``hung`` — no end within the request deadline (the invariant says this never happens).

A connection the proxy never delivered (no ready endpoint, or the endpoint refused the connection:
a dead pod still listed) reached no server; the client sends the request again, as a client does on
"connection refused", and counts the retry (``retried``). Which case a failed connection was is
read from the proxy's record of the client's source port, never guessed from the error.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from fakecluster.service_proxy import DELIVERED, ServiceProxy

ANSWERED, CUT, HUNG, REFUSED = "answered", "cut", "hung", "refused"
MAX_RETRIES = 50  # a request refused this often (5 s of retries) counts as refused: lost
RETRY_PAUSE_S = 0.1


@dataclass(frozen=True, slots=True)
class Answer:
    outcome: str
    status: int = 0
    cold: bool = False
    body: bytes = b""
    endpoint: str = ""  # where the proxy sent the connection
    error: str = ""
    seconds: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)  # of an answer, names in lower case


async def request_once(proxy: ServiceProxy, host: str, timeout: float) -> Answer:
    """``GET /`` with ``Host: host`` on a new connection through ``proxy``; "not delivered" (the
    outcome ``refused``) when the proxy's record says no server got it."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))  # the source port, known before connecting, finds the proxy's record
    sock.setblocking(False)
    client_port = sock.getsockname()[1]
    started = time.monotonic()
    owned = False  # once the stream owns the socket, closing the writer closes it
    request = f"GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode()
    try:
        async with asyncio.timeout(timeout):
            await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", proxy.port))
            reader, writer = await asyncio.open_connection(sock=sock, limit=1 << 20)
            owned = True
            try:
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                status, headers = _parse_head(head)
                length = int(headers.get("content-length", "-1"))
                body = await reader.readexactly(length) if length >= 0 else await reader.read()
            finally:
                writer.close()
    except TimeoutError:
        record = proxy.connection(client_port)
        return Answer(
            HUNG,
            endpoint=record.endpoint if record else "",
            error=f"no answer in {timeout:g} s",
            seconds=time.monotonic() - started,
        )
    except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as error:
        record = proxy.connection(client_port)
        delivered = record is not None and record.outcome == DELIVERED
        return Answer(
            CUT if delivered else REFUSED,
            endpoint=record.endpoint if record else "",
            error=f"{type(error).__name__}: {error}",
            seconds=time.monotonic() - started,
        )
    finally:
        if not owned:
            sock.close()
    record = proxy.connection(client_port)
    return Answer(
        ANSWERED,
        status,
        headers.get("x-kpa-cold-start", "").lower() == "true",
        body,
        record.endpoint if record else "",
        seconds=time.monotonic() - started,
    )


def _parse_head(head: bytes) -> tuple[int, dict[str, str]]:
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name:
            headers[name.strip().lower()] = value.strip()
    return status, headers


@dataclass
class Tally:
    """Every request sent and how it ended; ``retried``: connections that reached no server."""

    sent: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    statuses: Counter[int] = field(default_factory=Counter)
    endpoints: Counter[str] = field(default_factory=Counter)  # answered requests per endpoint
    retried: int = 0
    failures: list[Answer] = field(default_factory=list)  # anything but a 2xx answer
    slowest_s: float = 0.0

    def add(self, answer: Answer) -> None:
        self.outcomes[answer.outcome] += 1
        self.slowest_s = max(self.slowest_s, answer.seconds)
        if answer.outcome == ANSWERED:
            self.statuses[answer.status] += 1
            self.endpoints[answer.endpoint] += 1
        if answer.outcome != ANSWERED or not 200 <= answer.status < 300:
            self.failures.append(answer)

    @property
    def ok(self) -> int:
        return sum(n for status, n in self.statuses.items() if 200 <= status < 300)

    def summary(self) -> dict[str, Any]:
        return {
            "sent": self.sent,
            "outcomes": dict(self.outcomes),
            "statuses": dict(self.statuses),
            "retried": self.retried,
            "slowest_s": round(self.slowest_s, 2),
            "failures": [
                (a.outcome, a.status, a.endpoint, a.error, a.body[:200]) for a in self.failures[:10]
            ],
        }


class ClosedLoop:
    """``clients`` clients, each sending its next request when the last one ended."""

    def __init__(self, proxy: ServiceProxy, host: str, clients: int = 8, timeout: float = 30.0) -> None:
        self.proxy, self.host, self.clients, self.timeout = proxy, host, clients, timeout
        self.tally = Tally()
        self.in_flight = 0

    async def attempt(self) -> Answer:
        """One try of a request: ``refused`` when no server got it."""
        return await request_once(self.proxy, self.host, self.timeout)

    async def one(self) -> Answer:
        """One request to its end, retried while no server got it."""
        self.tally.sent += 1
        self.in_flight += 1
        try:
            for _ in range(MAX_RETRIES):
                answer = await self.attempt()
                if answer.outcome != REFUSED:
                    break
                self.tally.retried += 1
                await asyncio.sleep(RETRY_PAUSE_S)
            self.tally.add(answer)
            return answer
        finally:
            self.in_flight -= 1

    async def run(self, seconds: float, until: Callable[[], bool] | None = None) -> Tally:
        """Load for ``seconds`` (or until ``until()`` holds), then wait for every request's end."""
        deadline = time.monotonic() + seconds

        async def client() -> None:
            while time.monotonic() < deadline and not (until and until()):
                await self.one()

        await asyncio.gather(*(client() for _ in range(self.clients)))
        return self.tally
