"""The engine's interfaces and their implementations are held in step by this test, not by hand.

Each module of httpengine states what it needs from a neighbour as a ``typing.Protocol``; the
classes that fill each role must have every member, and their methods the same parameters (names,
kinds, defaults) and the same sync/async nature. A member added to a protocol, or a parameter added
to one implementation only, fails here, naming both.
"""

from __future__ import annotations

import asyncio
import inspect
from typing import Protocol

import pytest

from httpengine.connection import Listener, ServerConnection
from httpengine.request import BodySource, Request, RequestBody
from httpengine.response import (
    BufferedResponse,
    Channel,
    HeaderLine,
    Response,
    ResponseSink,
    WithHeader,
)
from httpengine.server import HttpServer
from httpengine.upstream import Dispatched, UpstreamPool
from httpengine.upstream_connection import Pool, Replay, UpstreamConnection
from kpa.load_client import Outcome


def _server_response() -> Response:
    conn = ServerConnection(HttpServer(lambda request, response: None))
    request = Request(b"GET", b"/", [], "1.1", True, "127.0.0.1", RequestBody.of(b""))
    return Response(conn, request)


def _dispatched() -> Dispatched:
    pool = UpstreamPool("127.0.0.1", 9)
    return Dispatched(pool, UpstreamConnection(pool), b"", BufferedResponse(), False, lambda result: None)


ROLES = [
    (ResponseSink, "Response", _server_response),
    (ResponseSink, "BufferedResponse", BufferedResponse),
    (ResponseSink, "WithHeader", lambda: WithHeader(_server_response(), HeaderLine(b"x-a", b"1"))),
    (ResponseSink, "Outcome", Outcome),  # kpa load's: keeps the status and the cold-start flag
    (Channel, "ServerConnection", lambda: ServerConnection(HttpServer(lambda request, response: None))),
    (BodySource, "ServerConnection", lambda: ServerConnection(HttpServer(lambda request, response: None))),
    (Listener, "HttpServer", lambda: HttpServer(lambda request, response: None)),
    (Pool, "UpstreamPool", lambda: UpstreamPool("127.0.0.1", 9)),
    (Replay, "Dispatched", _dispatched),
]


def members(protocol: type) -> set[str]:
    names = set(getattr(protocol, "__annotations__", {}))
    names |= {name for name in vars(protocol) if not name.startswith("_")}
    return names


def declares(implementation: object, name: str) -> bool:
    """``implementation`` has ``name``, or its class declares it (an attribute set once connected)."""
    classes = type(implementation).__mro__
    return hasattr(implementation, name) or any(name in vars(c).get("__annotations__", {}) for c in classes)


def shape(function) -> tuple:
    parameters = [(p.name, p.kind, p.default) for p in inspect.signature(function).parameters.values()]
    return inspect.iscoroutinefunction(function), parameters


@pytest.mark.parametrize(
    ("protocol", "make"),
    [(protocol, make) for protocol, _, make in ROLES],
    ids=[f"{name} is a {protocol.__name__}" for protocol, name, _ in ROLES],
)
def test_implementation_has_every_member_of_its_protocol_with_the_same_signature(protocol, make):
    assert issubclass(protocol, Protocol)
    implementation = make()
    kind = type(implementation).__name__
    for name in sorted(members(protocol)):
        assert declares(implementation, name), f"{kind} lacks {protocol.__name__}.{name}"
        wanted = vars(protocol).get(name)
        if inspect.isfunction(wanted):
            have = getattr(type(implementation), name)
            assert shape(have) == shape(wanted), (
                f"{kind}.{name}{inspect.signature(have)} differs from "
                f"{protocol.__name__}.{name}{inspect.signature(wanted)}"
            )


def test_a_body_made_in_memory_reads_back_whole_then_empty():
    """A request made here (``UpstreamPool.request``) carries its body in memory: no connection feeds it,
    and reading it must not ask one to resume."""

    async def read_twice() -> tuple[bytes, bytes]:
        body = RequestBody.of(b"payload")
        return await body.read(), await body.read()

    assert asyncio.run(read_twice()) == (b"payload", b"")
