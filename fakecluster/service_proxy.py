"""A kube-proxy stand-in for tests: one Service port on 127.0.0.1, forwarded per TCP connection.

On a cluster a client reaches a Service at its virtual IP and kube-proxy sends each new TCP
connection to one ready endpoint of the Service's EndpointSlices, picked at random, for the whole
life of that connection (iptables/nftables mode: conntrack keeps it there even when the slices
change later). The fake cluster has no virtual IPs and no DNS, so a test that wants "the Service"
opens a :class:`ServiceProxy` instead::

    with ServiceProxy(server, "demo", "web-kpa") as proxy:   # server: FakeApiServer (or its Cluster)
        httpx.get(f"{proxy.url}/", headers={"Host": "web-kpa.demo"})

It listens on ``127.0.0.1:<free port>`` and watches the Service's EndpointSlices (label
``kubernetes.io/service-name``) in-process, through the fake's own watch machinery, as kube-proxy
watches them through the API server. For each accepted connection:

* an endpoint whose ``conditions.ready`` is not false is picked at random, on the slice's port named
  ``port_name`` (default: the slice's first port) — kube-proxy's mapping of a Service port to its
  endpoints' port of the same name;
* no ready endpoint: the connection is reset at once, unread (on a cluster kube-proxy's REJECT rule
  answers the SYN with "connection refused"; a listening socket has accepted by then, so a reset is
  the nearest a client can be told);
* the endpoint does not accept (a pod whose process died, still listed): reset at once, unread, as
  the client of a dead pod IP gets "connection refused"; nothing is retried elsewhere;
* otherwise bytes are copied both ways until both sides have finished: an end of stream from either
  side is passed on as a half-close, a reset from either side resets the other.

Every connection is recorded by the client's source port (:meth:`connection`), so a test that
counts its requests can tell a request that reached no server (``refused``/``unreachable``: safe to
send again, as after "connection refused") from one cut while a server held it (``delivered``).
Not done: session affinity, ``externalTrafficPolicy``, terminating-endpoint fallback, UDP, IPv6.
The proxy runs on a thread of its own with its own event loop; use it as a context manager.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import socket
import struct
import threading
from collections import Counter, OrderedDict
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

from fakecluster import selectors
from fakecluster.cluster import Cluster
from fakecluster.resources import ENDPOINTSLICES

if TYPE_CHECKING:
    from fakecluster.server import FakeApiServer

SERVICE_NAME_LABEL = "kubernetes.io/service-name"
REFUSED, UNREACHABLE, DELIVERED = "refused", "unreachable", "delivered"
CONNECT_TIMEOUT_S = 2.0
CALL_TIMEOUT_S = 10.0
WATCH_SPAN_S = 86_400.0  # one watch's length; it is opened again when it ends (a dropped watch too)
KEPT_RECORDS = 100_000
_CHUNK = 65_536


@dataclass(frozen=True, slots=True)
class Connection:
    """What became of one client connection: ``refused`` (no ready endpoint), ``unreachable`` (the
    endpoint picked did not accept) or ``delivered`` to ``endpoint`` (``ip:port``)."""

    outcome: str
    endpoint: str = ""


def ready_endpoints(slices: list[dict[str, Any]], port_name: str | None) -> list[tuple[str, int]]:
    """(ip, port) of every ready endpoint of ``slices`` on the port named ``port_name`` (None: each
    slice's first port); a slice without that port contributes nothing."""
    found: set[tuple[str, int]] = set()
    for piece in slices:
        ports = [p for p in piece.get("ports") or [] if isinstance(p.get("port"), int)]
        if port_name is not None:
            ports = [p for p in ports if p.get("name", "") == port_name]
        if not ports:
            continue
        port = int(ports[0]["port"])
        for endpoint in piece.get("endpoints") or []:
            if (endpoint.get("conditions") or {}).get("ready") is False:
                continue
            for address in (endpoint.get("addresses") or [])[:1]:
                found.add((str(address), port))
    return sorted(found)


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP reset (SO_LINGER 0), not a clean end: what a refused or cut client sees."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class ServiceProxy:
    """Forwards connections on ``127.0.0.1:port`` to the Service's ready endpoints; see the module."""

    def __init__(
        self,
        api: FakeApiServer | Cluster,
        namespace: str,
        service: str,
        *,
        port_name: str | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.cluster: Cluster = api if isinstance(api, Cluster) else api.cluster
        self.namespace, self.service, self.port_name = namespace, service, port_name
        self._rng = rng or random.Random()
        self._matches = selectors.object_matcher(f"{SERVICE_NAME_LABEL}={service}", "", ENDPOINTSLICES)
        self._slices: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()  # the counters and records, read from the test's thread
        self._records: OrderedDict[int, Connection] = OrderedDict()
        self.connections: Counter[str] = Counter()  # delivered connections per endpoint "ip:port"
        self._open: Counter[str] = Counter()
        self.refused = 0
        self.unreachable = 0
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(1024)
        self.port: int = self._listener.getsockname()[1]
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._main: asyncio.Future[None] | None = None
        self._handlers: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # -- what tests read (any thread) ------------------------------------------------------------

    def endpoints(self) -> list[str]:
        """The ready endpoints new connections go to now, as ``ip:port``."""
        return [f"{ip}:{port}" for ip, port in self._ready()]

    def connection(self, client_port: int) -> Connection | None:
        """What became of the latest connection from 127.0.0.1:``client_port`` (None: unknown)."""
        with self._lock:
            return self._records.get(client_port)

    def open_to(self, endpoint: str) -> int:
        """Connections to ``endpoint`` (``ip:port``, or an IP for any port) open now."""
        with self._lock:
            return sum(n for key, n in self._open.items() if key == endpoint or key.split(":")[0] == endpoint)

    def delivered(self) -> dict[str, int]:
        with self._lock:
            return dict(self.connections)

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> Self:
        started = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                self._main = loop.create_task(self._run(started))
                loop.run_until_complete(self._main)
            except asyncio.CancelledError:
                pass
            finally:
                loop.close()

        self._thread = threading.Thread(target=run, name=f"service-proxy {self.service}", daemon=True)
        self._thread.start()
        if not started.wait(CALL_TIMEOUT_S):
            raise RuntimeError(
                f"the proxy for Service {self.service} did not start within {CALL_TIMEOUT_S} s"
            )
        return self

    def close(self) -> None:
        """Stop listening, reset every open connection, end the watch and the thread."""
        loop, main, thread = self._loop, self._main, self._thread
        if loop is not None and main is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(main.cancel)
        if thread is not None:
            thread.join(CALL_TIMEOUT_S)
        self._listener.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- on the proxy's loop ---------------------------------------------------------------------

    async def _run(self, started: threading.Event) -> None:
        loop = asyncio.get_running_loop()
        self._listener.setblocking(False)
        first, watcher = self.cluster.watch(ENDPOINTSLICES, self.namespace, self._matches, "", loop)
        self._replace(first)
        server = await asyncio.start_server(self._serve, sock=self._listener, limit=_CHUNK)
        handlers = self._handlers
        started.set()
        try:
            while True:
                try:
                    async for line in watcher.stream([], WATCH_SPAN_S, None):
                        self._apply(json.loads(line))
                finally:
                    self.cluster.unwatch(watcher)
                first, watcher = self.cluster.watch(ENDPOINTSLICES, self.namespace, self._matches, "", loop)
                self._replace(first)
        finally:
            server.close()
            for task in list(handlers):
                task.cancel()
            await asyncio.gather(*handlers, return_exceptions=True)
            with contextlib.suppress(Exception):
                async with asyncio.timeout(1.0):
                    await server.wait_closed()

    def _replace(self, events: list[dict[str, Any]]) -> None:
        self._slices = {str(e["object"]["metadata"]["name"]): e["object"] for e in events}

    def _apply(self, event: dict[str, Any]) -> None:
        kind, body = event.get("type"), event.get("object") or {}
        name = str((body.get("metadata") or {}).get("name") or "")
        if kind in ("ADDED", "MODIFIED"):
            self._slices[name] = body
        elif kind == "DELETED":
            self._slices.pop(name, None)

    def _ready(self) -> list[tuple[str, int]]:
        return ready_endpoints(list(self._slices.values()), self.port_name)

    def _record(self, client_port: int, record: Connection) -> None:
        with self._lock:
            self._records[client_port] = record
            self._records.move_to_end(client_port)
            while len(self._records) > KEPT_RECORDS:
                self._records.popitem(last=False)
            if record.outcome == REFUSED:
                self.refused += 1
            elif record.outcome == UNREACHABLE:
                self.unreachable += 1
            else:
                self.connections[record.endpoint] += 1
                self._open[record.endpoint] += 1

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        client_port = int(writer.get_extra_info("peername")[1])
        try:
            endpoints = self._ready()
            if not endpoints:
                self._record(client_port, Connection(REFUSED))
                _reset(writer)
                return
            ip, port = self._rng.choice(endpoints)
            try:
                async with asyncio.timeout(CONNECT_TIMEOUT_S):
                    up_reader, up_writer = await asyncio.open_connection(ip, port, limit=_CHUNK)
            except (OSError, TimeoutError):
                self._record(client_port, Connection(UNREACHABLE, f"{ip}:{port}"))
                _reset(writer)
                return
            endpoint = f"{ip}:{port}"
            self._record(client_port, Connection(DELIVERED, endpoint))
            try:
                await asyncio.gather(_pipe(reader, up_writer, writer), _pipe(up_reader, writer, up_writer))
            except asyncio.CancelledError:
                _reset(up_writer)
                raise
            finally:
                with self._lock:
                    self._open[endpoint] -= 1
                for side in (writer, up_writer):
                    if not side.transport.is_closing():
                        side.close()
        except asyncio.CancelledError:  # the proxy closes: its connections are cut (the task ends
            _reset(writer)  # normally: asyncio's stream callback logs a cancelled handler as an error)
        finally:
            self._handlers.discard(task)


async def _pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter, back: asyncio.StreamWriter) -> None:
    """Copy ``source`` into ``sink`` until it ends (then half-close ``sink``); a reset on either side
    resets both (``back`` is the writer of ``source``'s own connection)."""
    try:
        while data := await source.read(_CHUNK):
            sink.write(data)
            await sink.drain()
        if sink.can_write_eof() and not sink.transport.is_closing():
            sink.write_eof()
    except (ConnectionError, OSError):
        _reset(sink)
        _reset(back)
