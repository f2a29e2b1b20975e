"""The activator's revision table: what it knows of each revision, and the events that move its queue.

A revision here is its settings, its pods (which passed a probe: ``PodHealth``), its throttler
(``RevisionThrottler``: may a request go now, and to which pod), a connection pool per pod and two
timers — the next held request's deadline and the next probe. The table owns them so that every
change of capacity — a release, a passing or refused probe, new endpoints, new settings, this
replica's slot among the activators — hands the requests it admits to their waiters in one place
(``dispatch``), whatever caused it. The request path (``activator.forwarding``) reads the table and
reports releases and refused pods back; the server (``activator.server``) adds the lifecycle.

Every method must be called from the event loop's thread.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass, field
from typing import Any

from activator.config import ActivatorConfigError, RevisionConfig, check_activator_slot
from activator.metrics import RevisionGauges
from activator.probing import PodHealth
from activator.routing import RevisionRouter, RouteMiss
from activator.throttler import Expired, Grant, RevisionThrottler
from autoscaler.stat import RevisionKey
from httpengine.errors import UpstreamConnectError, UpstreamError
from httpengine.upstream import UpstreamPool

log = logging.getLogger(__name__)

PROBE_PATH = b"/healthz"
PROBE_HEADERS = ((b"k-network-probe", b"queue"), (b"user-agent", b"Knative-Activator-Probe"))
_ROUTE_CACHE_SIZE = 4096  # distinct (Host, revision header, namespace header) triples remembered

Spawn = Callable[[Coroutine[Any, Any, None]], "asyncio.Task[None]"]
RouteHeaders = tuple[bytes | None, bytes | None, bytes | None]  # Host, revision and namespace headers


def parse_address(address: str) -> tuple[str, int]:
    """``host:port`` of a pod's queue-proxy; raises ActivatorConfigError naming the bad value."""
    if not isinstance(address, str):
        raise ActivatorConfigError(f"endpoint address {address!r}: must be a string host:port")
    host, sep, port = address.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ActivatorConfigError(f"endpoint address {address!r}: must be host:port with a port in 1..65535")
    return host, int(port)


class Ticket:
    """A request's place in its revision's wait queue (the throttler's ticket) and what reached it.

    A request is queued in the throttler before the code that waits for it runs, so capacity freed in
    between (a release, a new pod, a config change in the same loop turn) can admit it first: the
    grant is kept in ``result`` for the waiter to find, never mistaken for a client that left. ``gone``
    marks a client that left: anything reaching the ticket afterwards goes straight back. ``started``
    says whether the request's task has begun, so a client leaving before then is handled by that task
    when it starts instead of by cancelling a coroutine that never ran (which would skip its cleanup).
    """

    __slots__ = ("arrived", "future", "gone", "result", "started")

    def __init__(self, arrived: float) -> None:
        self.arrived = arrived  # loop time, for the request's latency in /metrics
        self.future: asyncio.Future[None] | None = None
        self.result: Grant[Ticket] | Expired[Ticket] | None = None
        self.gone = False
        self.started = False


@dataclass(eq=False)
class RoutedRevision:
    """A revision the activator routes requests to: its settings, pods, throttler, pools and timers."""

    key: RevisionKey
    config: RevisionConfig
    throttler: RevisionThrottler[Ticket]
    health: PodHealth
    pools: dict[str, UpstreamPool] = field(default_factory=dict)
    expiry: asyncio.TimerHandle | None = None
    probe_timer: asyncio.TimerHandle | None = None
    removed: bool = False
    failure: str | None = None  # why its last pod failed, told to requests that waited in vain

    def pool(self, address: str) -> UpstreamPool:
        pool = self.pools.get(address)
        if pool is None:
            host, port = parse_address(address)
            cc = self.config.container_concurrency
            pool = self.pools[address] = UpstreamPool(host, port, max_idle=cc if cc > 0 else 100)
        return pool


class RevisionTable:
    """The revisions, their control API (docs/activator.md) and the capacity events between them.

    ``spawn`` runs a probe in a task its owner cancels at shutdown.
    """

    def __init__(
        self,
        *,
        probe_frequency: float,
        probe_timeout: float,
        activator_index: int,
        activator_count: int,
        rng: random.Random,
        spawn: Spawn,
    ) -> None:
        if not probe_timeout > 0:
            raise ActivatorConfigError(f"probe timeout={probe_timeout!r}: must be > 0 seconds")
        PodHealth(probe_frequency)  # validates the frequency with its own message
        check_activator_slot(activator_index, activator_count)
        self.probe_frequency = probe_frequency
        self.probe_timeout = probe_timeout
        self._rng = rng
        self._spawn_probe = spawn
        self._slot = (activator_index, activator_count)
        self._revisions: dict[RevisionKey, RoutedRevision] = {}
        self._router = RevisionRouter()
        self._routes: dict[RouteHeaders, RoutedRevision | RouteMiss] = {}
        self._loop: asyncio.AbstractEventLoop | None = None

    # -- control API ---------------------------------------------------------------------------

    def set_revision(self, config: RevisionConfig) -> None:
        """Add a revision or change its settings; held requests stay held."""
        revision = self._revisions.get(config.key)
        if revision is None:
            throttler: RevisionThrottler[Ticket] = RevisionThrottler(
                config.container_concurrency, queue_bound=config.queue_bound, rng=self._rng
            )
            key = config.key
            self._revisions[key] = RoutedRevision(key, config, throttler, PodHealth(self.probe_frequency))
            self._set_router()
            return
        revision.config = config
        now = self.now()
        self.dispatch(
            revision, revision.throttler.reconfigure(config.container_concurrency, config.queue_bound, now)
        )

    def set_endpoints(self, key: RevisionKey, addresses: Iterable[str]) -> None:
        """The revision's pod queue-proxy addresses, ready or not: new ones are probed at once."""
        revision = self._revision(key)
        wanted = list(addresses)
        for address in wanted:
            parse_address(address)
        if revision.health.set_endpoints(wanted, self.now()):
            self._update_backends(revision)
        for address in set(revision.pools) - set(wanted):
            revision.pools.pop(address).close()
        self._schedule_probes(revision)

    def set_revision_failure(self, key: RevisionKey, reason: str | None) -> None:
        """Why the revision's last pod failed (a crash, a failed start), or None once a pod is ready.

        A request that waited in vain for capacity is told this reason with its 504, so a crash-looping
        revision says it is crashing instead of only that there was no capacity.
        """
        self._revision(key).failure = reason

    def remove_revision(self, key: RevisionKey) -> None:
        """Forget a revision; requests it still holds are answered 503."""
        revision = self._revision(key)
        revision.removed = True
        del self._revisions[key]
        self._set_router()
        for timer in (revision.expiry, revision.probe_timer):
            if timer is not None:
                timer.cancel()
        for expired in revision.throttler.expire(float("inf")):
            self.resolve(expired.ticket, expired)
        for pool in revision.pools.values():
            pool.close()

    def set_activator_slot(self, index: int, count: int) -> None:
        """This replica's index among ``count`` activators fronting the same pods (-1: use every pod)."""
        check_activator_slot(index, count)
        self._slot = (index, count)
        for revision in self._revisions.values():
            self._update_backends(revision)

    @property
    def activator_slot(self) -> tuple[int, int]:
        return self._slot

    def revisions(self) -> list[RevisionKey]:
        return sorted(self._revisions, key=str)

    def revision_status(self, key: RevisionKey) -> dict[str, Any]:
        revision = self._revision(key)
        throttler = revision.throttler
        return {
            **revision.config.to_json(),
            "endpoints": sorted(revision.health.endpoints),
            "healthy": sorted(revision.health.healthy),
            "assigned": throttler.assigned,
            "capacity": throttler.capacity,
            "held": throttler.waiting,
            "in_flight": throttler.executing,
            "effective_queue_bound": throttler.effective_queue_bound,
            "last_failure": revision.failure,
        }

    def revision_gauges(self) -> list[RevisionGauges]:
        """Each revision's gauges as /metrics shows them, read from the throttlers when scraped."""
        return [
            RevisionGauges(
                key.namespace,
                key.name,
                held=r.throttler.waiting,
                in_flight=r.throttler.executing,
                capacity=r.throttler.capacity,
                healthy_pods=len(r.health.healthy),
            )
            for key, r in sorted(self._revisions.items(), key=lambda item: str(item[0]))
        ]

    # -- the request path's view ---------------------------------------------------------------

    def route(self, headers: RouteHeaders) -> RoutedRevision | RouteMiss:
        """The revision a request's Host and Knative headers name, remembered per distinct triple."""
        routed = self._routes.get(headers)
        if routed is None:
            found = self._router.route(*(_text(value) for value in headers))
            routed = found if isinstance(found, RouteMiss) else self._revisions[found]
            if len(self._routes) >= _ROUTE_CACHE_SIZE:
                self._routes.clear()
            self._routes[headers] = routed
        return routed

    def now(self) -> float:
        """The event loop's clock, which every deadline, probe and stat of the activator is on."""
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        return loop.time()

    # -- capacity events -------------------------------------------------------------------------

    def release(self, revision: RoutedRevision, grant: Grant[Ticket]) -> None:
        """A forwarded request is done with its pod: the slot goes to the next held request."""
        self.dispatch(revision, revision.throttler.release(grant, self.now()))

    def dispatch(self, revision: RoutedRevision, grants: list[Grant[Ticket]]) -> None:
        """Wake admitted waiters; one whose client left gives its slot straight back."""
        while grants:
            grant = grants.pop()
            if not self.resolve(grant.ticket, grant):
                grants.extend(revision.throttler.release(grant, self.now()))

    @staticmethod
    def resolve(ticket: Ticket, result: Grant[Ticket] | Expired[Ticket]) -> bool:
        """Hand ``result`` to the ticket's waiter, even one whose code has not started; False if gone."""
        if ticket.gone or ticket.result is not None:
            return False
        ticket.result = result
        future = ticket.future
        if future is not None and not future.done():
            future.set_result(None)
        return True

    def arm_expiry(self, revision: RoutedRevision) -> None:
        """Make sure a timer fires at the revision's earliest held deadline."""
        deadline = revision.throttler.next_deadline()
        timer = revision.expiry
        if timer is not None:
            if deadline is not None and timer.when() <= deadline:
                return
            timer.cancel()
            revision.expiry = None
        if deadline is not None:
            revision.expiry = asyncio.get_running_loop().call_at(deadline, self._expire, revision)

    def _expire(self, revision: RoutedRevision) -> None:
        revision.expiry = None
        for expired in revision.throttler.expire(self.now()):
            self.resolve(expired.ticket, expired)
        self.arm_expiry(revision)

    def _update_backends(self, revision: RoutedRevision) -> None:
        index, count = self._slot
        grants = revision.throttler.update_backends(
            revision.health.healthy, self.now(), activator_index=index, activator_count=count
        )
        self.dispatch(revision, grants)

    def pod_refused(self, revision: RoutedRevision, address: str) -> None:
        """A pod refused a connection: distrust it until it passes a probe again."""
        if revision.health.mark_failed(address, self.now()):
            self._update_backends(revision)
            self._schedule_probes(revision)

    # -- probing ---------------------------------------------------------------------------------

    def _schedule_probes(self, revision: RoutedRevision) -> None:
        if revision.removed:
            return
        loop = asyncio.get_running_loop()
        for address in revision.health.due(self.now()):
            self._spawn_probe(self._probe(revision, address))
        if revision.probe_timer is not None:
            revision.probe_timer.cancel()
            revision.probe_timer = None
        due = revision.health.next_due()
        if due is not None:
            revision.probe_timer = loop.call_at(due, self._schedule_probes, revision)

    async def _probe(self, revision: RoutedRevision, address: str) -> None:
        ok = refused = False
        try:
            async with asyncio.timeout(self.probe_timeout):
                status, _, body = await revision.pool(address).request(b"GET", PROBE_PATH, PROBE_HEADERS)
            ok = status == 200 and body == b"queue"
        except UpstreamConnectError:
            refused = True
        except (UpstreamError, TimeoutError, OSError):
            ok = False
        if revision.removed:
            return
        if revision.health.record(address, ok, self.now(), refused=refused):
            log.info("pod %s of %s passed its probe", address, revision.key)
            self._update_backends(revision)
        self._schedule_probes(revision)

    # -- helpers ---------------------------------------------------------------------------------

    def _revision(self, key: RevisionKey) -> RoutedRevision:
        revision = self._revisions.get(key)
        if revision is None:
            known = ", ".join(str(k) for k in self.revisions()) or "(none)"
            raise KeyError(f"unknown revision {key}; known revisions: {known}")
        return revision

    def _set_router(self) -> None:
        self._router = RevisionRouter(self._revisions)
        self._routes = {}


def _text(value: bytes | None) -> str | None:
    return value.decode("latin-1") if value is not None else None
