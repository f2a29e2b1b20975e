"""The local stack's front door: one address for every revision, routed like a Knative
ServerlessService.

A request picks its revision by ``Host`` (``hello``, ``hello.default`` or
``hello.default.svc.cluster.local``, as the activator reads it) or by a path prefix,
``/r/hello/...`` (the prefix is stripped before the request goes on). Then:

* **proxy mode** (no pod, or not enough burst capacity): the request goes through the embedded
  activator, which holds it until a pod is ready and throttles to the pods' capacity;
* **serve mode**: it goes straight to a ready pod's queue-proxy, round robin.

The autoscaler service flips the mode (``set_mode``); the entry follows at once. A revision with
``kpa.dev/auth-*`` annotations is checked here, before it can reach the activator (so an
unauthenticated request cannot wake it), and again by its queue-proxies; see docs/security.md.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Sequence
from functools import partial

from activator.routing import RevisionRouter, RouteMiss
from activator.server import Activator
from autoscaler.actuator import PodInfo
from autoscaler.lifecycle import PROXY, SERVE
from autoscaler.stat import RevisionKey
from httpengine.errors import UpstreamConnectError, UpstreamError
from httpengine.request import Request
from httpengine.response import Response, answer_failure
from httpengine.upstream import UpstreamPool
from queueproxy.gate import PASS, AuthGate

PATH_PREFIX = b"/r/"
DIRECT_DEADLINE_MARGIN = 1.0  # seconds past the revision timeout before the entry gives up on a pod
DEFAULT_DIRECT_DEADLINE = 300.0 + DIRECT_DEADLINE_MARGIN  # Knative's default revision timeout


class _Backends:
    """Where serve mode sends a revision's requests: its ready pods, round robin."""

    def __init__(self) -> None:
        self.mode = PROXY
        self.pools: dict[str, UpstreamPool] = {}
        self._turn = itertools.count()

    def set_pods(self, addresses: Sequence[str], max_idle: int) -> None:
        for address in set(self.pools) - set(addresses):
            self.pools.pop(address).close()
        for address in addresses:
            if address not in self.pools:
                host, _, port = address.rpartition(":")
                self.pools[address] = UpstreamPool(host, int(port), max_idle=max_idle)

    def candidates(self) -> list[UpstreamPool]:
        """Pools in the order to try them: the next in turn first, then the others."""
        pools = list(self.pools.values())
        if not pools:
            return []
        start = next(self._turn) % len(pools)
        return pools[start:] + pools[:start]


class Entry:
    """The stack's front door: route by Host or ``/r/<revision>/``, then activator or pods."""

    def __init__(
        self,
        activator: Activator,
        refs: Sequence[RevisionKey],
        max_idle: dict[RevisionKey, int],
        timeouts: dict[RevisionKey, float] | None = None,
    ) -> None:
        self.activator = activator
        self.router = RevisionRouter(RevisionKey(r.namespace, r.name) for r in refs)
        self.backends = {RevisionKey(r.namespace, r.name): _Backends() for r in refs}
        self.max_idle = {RevisionKey(r.namespace, r.name): n for r, n in max_idle.items()}
        # Serve mode's own bound: the pod's queue-proxy answers 504 at the revision timeout; this
        # answers for a pod that cannot (hung, stopped) a little later, so no request waits forever.
        self.deadlines = {key: t + DIRECT_DEADLINE_MARGIN for key, t in (timeouts or {}).items()}
        self.served_direct = 0
        self.served_proxied = 0
        self.gates: dict[RevisionKey, AuthGate] = {}  # revisions that need credentials

    def set_mode(self, ref: RevisionKey, mode: str) -> None:
        self.backends[RevisionKey(ref.namespace, ref.name)].mode = mode

    def set_ready_pods(self, ref: RevisionKey, pods: Sequence[PodInfo]) -> None:
        key = RevisionKey(ref.namespace, ref.name)
        self.backends[key].set_pods([p.address for p in pods], self.max_idle[key])

    def handle(self, request: Request, response: Response):  # -> Awaitable[None] | None
        routed = self._route(request)
        if isinstance(routed, RouteMiss):
            body = (
                f"{routed.reason}\nkpa up routes by Host (e.g. curl -H 'Host: <revision>' ...) "
                f"or by path prefix /r/<revision>/...\n"
            )
            response.send(404, body.encode())
            return None
        key, request = routed
        gate = self.gates.get(key)
        if gate is not None:
            screened = gate.screen(request, response, partial(self._forward, key))
            if screened is not PASS:
                return screened  # refused (None) or waiting for the JWKS
        return self._forward(key, request, response)

    def _forward(
        self, key: RevisionKey, request: Request, response: Response, *, in_task: bool = False
    ):  # -> Awaitable[None] | None
        """Serve mode: straight to a pod; proxy mode: through the activator."""
        backends = self.backends[key]
        if backends.mode == SERVE:
            return self._serve_direct(key, backends, request, response)
        self.served_proxied += 1
        # None: sent at once, finished from callbacks
        return self.activator.handle(request, response, in_task=in_task)

    async def _serve_direct(
        self, key: RevisionKey, backends: _Backends, request: Request, response: Response
    ) -> None:
        limit = self.deadlines.get(key, DEFAULT_DIRECT_DEADLINE)
        for pool in backends.candidates():
            try:
                async with asyncio.timeout(limit):
                    await pool.forward(request, response)
                self.served_direct += 1
                return
            except UpstreamConnectError:
                continue  # nothing was sent: try the next pod, then the activator
            except UpstreamError as exc:
                answer_failure(response, 502, f"kpa up: pod {pool.address} of {key} failed: {exc}")
                return
            except TimeoutError:
                message = f"kpa up: pod {pool.address} of {key} did not answer within {limit:g}s"
                answer_failure(response, 504, message)
                return
        self.served_proxied += 1
        pending = self.activator.handle(request, response, in_task=True)
        if pending is not None:
            await pending

    def _route(self, request: Request) -> tuple[RevisionKey, Request] | RouteMiss:
        target = request.target
        if target.startswith(PATH_PREFIX):
            name, slash, rest = target[len(PATH_PREFIX) :].partition(b"/")
            revision, _, namespace = name.decode("latin-1").partition(".")
            routed = self.router.route(None, revision, namespace or None)
            if isinstance(routed, RouteMiss):
                return routed
            headers = [
                *request.headers,
                (b"knative-serving-revision", routed.name.encode()),
                (b"knative-serving-namespace", routed.namespace.encode()),
            ]
            new_target = b"/" + rest if slash else b"/"
            rewritten = Request(
                request.method,
                new_target,
                headers,
                request.http_version,
                request.keep_alive,
                request.client,
                request.body,
            )
            return routed, rewritten
        host = request.header(b"host")
        routed = self.router.route(
            host.decode("latin-1") if host is not None else None,
            _text(request.header(b"knative-serving-revision")),
            _text(request.header(b"knative-serving-namespace")),
        )
        return routed if isinstance(routed, RouteMiss) else (routed, request)


def _text(value: bytes | None) -> str | None:
    return value.decode("latin-1") if value is not None else None
