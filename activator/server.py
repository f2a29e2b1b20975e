"""The activator process: hold requests while a revision has no capacity, forward them the instant it has.

This is the imperative shell around the pure parts — ``RevisionRouter`` (which revision),
``RevisionThrottler`` (may it go now, and to which pod), ``PodHealth`` (which pods passed a probe)
and ``ConcurrencyReporter`` (what the autoscaler hears). It owns the sockets, futures and timers:

* the data path runs on the HTTP engine (``httpengine.server`` + ``httpengine.upstream``)
  under uvloop: a held request is an asyncio future, admitted when a release, a passing probe or a
  new endpoint list frees capacity; one timer per revision expires waiters at their deadline;
* probes of pods not yet trusted run every ``probe_frequency`` seconds with a ``probe_timeout``;
* stats go to a ``StatSink`` at once for a revision's first request and then every second.

``Activator`` is also the in-process API the local stack embeds (see docs/activator.md): configure
revisions and endpoints with ``set_revision``/``set_endpoints``/``remove_revision``, serve with
``start`` or call ``handle`` from your own ``HttpServer``. Every method must be called from the
event loop's thread.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from activator.config import ActivatorConfigError, RevisionConfig, check_activator_slot
from activator.metrics import ActivatorMetrics, RevisionGauges
from activator.probing import DEFAULT_PROBE_FREQUENCY, DEFAULT_PROBE_TIMEOUT, PodHealth
from activator.reporter import ConcurrencyReporter
from activator.routing import RevisionRouter, RouteMiss
from activator.sinks import RevisionStat, StatSink
from activator.throttler import Expired, Grant, RevisionThrottler
from autoscaler.stat import RevisionKey
from httpengine.connection import Handler
from httpengine.errors import UpstreamConnectError, UpstreamError
from httpengine.limits import Limits
from httpengine.request import Request
from httpengine.response import HeaderLine, Response, WithHeader, answer_failure
from httpengine.server import HttpServer
from httpengine.upstream import Dispatched, UpstreamPool
from queueproxy.breaker import Admission
from queueproxy.gate import PASS, AuthGate

log = logging.getLogger(__name__)

# Response header saying whether the request was held while its revision had no pod to take it.
COLD_START_HEADER = b"x-kpa-cold-start"
PROBE_PATH = b"/healthz"
PROBE_HEADERS = ((b"k-network-probe", b"queue"), (b"user-agent", b"Knative-Activator-Probe"))
RETRY_AFTER_SECONDS = 1
REPORT_INTERVAL = 1.0
_PROXIED = (b"k-proxy-request", b"activator")
_ROUTE_CACHE_SIZE = 4096  # distinct (Host, revision header, namespace header) triples remembered
_COLD_START = {cold: HeaderLine(COLD_START_HEADER, b"true" if cold else b"false") for cold in (True, False)}


def parse_address(address: str) -> tuple[str, int]:
    """``host:port`` of a pod's queue-proxy; raises ActivatorConfigError naming the bad value."""
    if not isinstance(address, str):
        raise ActivatorConfigError(f"endpoint address {address!r}: must be a string host:port")
    host, sep, port = address.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ActivatorConfigError(f"endpoint address {address!r}: must be host:port with a port in 1..65535")
    return host, int(port)


class _Held:
    """A request's place in its revision's wait queue (the throttler's ticket) and what reached it.

    A request is queued in the throttler before the code that waits for it runs, so capacity freed in
    between (a release, a new pod, a config change in the same loop turn) can admit it first: the
    grant is kept in ``result`` for the waiter to find, never mistaken for a client that left. ``gone``
    marks a client that left: anything reaching the ticket afterwards goes straight back. ``started``
    says whether the request's task has begun, so a client leaving before then is handled by that task
    when it starts instead of by cancelling a coroutine that never ran (which would skip its cleanup).
    """

    __slots__ = ("future", "gone", "result", "started")

    def __init__(self) -> None:
        self.future: asyncio.Future[None] | None = None
        self.result: Grant[_Held] | Expired[_Held] | None = None
        self.gone = False
        self.started = False


@dataclass(eq=False)
class _Revision:
    config: RevisionConfig
    throttler: RevisionThrottler[_Held]
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


class _Deadline:
    """Cancels the current task at ``when`` (loop time), remembering it did — cheaper than asyncio.timeout."""

    __slots__ = ("expired", "handle", "task")

    def __init__(self, loop: asyncio.AbstractEventLoop, when: float) -> None:
        self.task = asyncio.current_task()
        self.expired = False
        self.handle = loop.call_at(when, self._fire)

    def _fire(self) -> None:
        self.expired = True
        self.task.cancel()

    def cancel(self) -> None:
        self.handle.cancel()


def _proxy_headers(host: bytes | None) -> tuple[tuple[bytes, bytes], ...]:
    """What the activator adds to a forwarded request: K-Proxy-Request and the client's Host."""
    return (_PROXIED, (b"k-original-host", host)) if host is not None else (_PROXIED,)


class _Exchange:
    """A request granted a pod at once and sent on an idle pooled connection, finished from callbacks.

    The same outcomes as :meth:`Activator._serve`, without a task per request: the pod's status, a 502
    when the pod fails it, a 504 at the revision timeout, nothing when the client goes away; a pod that
    refuses a replayed request sends it back through ``_serve`` to another pod.
    """

    __slots__ = (
        "activator", "deadline", "dispatched", "grant", "host", "request", "response", "revision",
        "routed", "timer",
    )  # fmt: skip

    def __init__(
        self,
        activator: Activator,
        revision: _Revision,
        routed: RevisionKey,
        grant: Grant[_Held],
        request: Request,
        response: Response,
        host: bytes | None,
        deadline: float,
    ) -> None:
        self.activator = activator
        self.revision = revision
        self.routed = routed
        self.grant = grant
        self.request = request
        self.response = response
        self.host = host
        self.deadline = deadline
        self.dispatched: Dispatched | None = None
        self.timer: asyncio.TimerHandle | None = None

    def dispatch(self) -> bool:
        """Send now if the pod's pool has an idle connection; False leaves the grant to ``_serve``."""
        grant = self.grant
        dispatched = self.revision.pool(grant.address).dispatch(
            self.request,
            WithHeader(self.response, _COLD_START[False]),
            self._upstream_done,
            host=grant.tracker.host_header,
            add_headers=_proxy_headers(self.host),
        )
        if dispatched is None:
            return False
        self.dispatched = dispatched
        self.response.on_abort = self._client_gone
        self.timer = self.activator._loop.call_at(self.deadline, self._expired)
        return True

    def _upstream_done(self, result: int | BaseException) -> None:
        self.dispatched = None
        if isinstance(result, UpstreamConnectError) and not self.response.started:
            self._retry_elsewhere(result)
            return
        if isinstance(result, BaseException):
            message = f"activator: pod {self.grant.address} failed: {result}"
            result = answer_failure(self.response, 502, message)
        self._finish(result)

    def _retry_elsewhere(self, error: UpstreamConnectError) -> None:
        """The pod refused the replay of a request a stale connection dropped: as ``_serve`` does."""
        activator, revision, grant = self.activator, self.revision, self.grant
        self.timer.cancel()
        log.info("pod %s of %s refused a request (%s); retrying", grant.address, revision.config.key, error)
        activator._pod_refused(revision, grant.address)
        if revision.removed:
            key = str(revision.config.key).encode()
            self.response.send(503, b"activator: revision %s was removed\n" % key)
            self._finish(503)
            return
        outcome, others = revision.throttler.retry(grant, activator._now(), self.deadline)
        activator._dispatch(revision, others)  # may admit the retried ticket: its result waits for it
        activator._start_serving(
            revision, self.routed, grant.ticket, False, outcome, self.request, self.response, self.host,
            self.deadline,
        )  # fmt: skip

    def _client_gone(self) -> None:
        if self.dispatched is not None:
            self.dispatched.cancel()
            self.dispatched = None
            self._finish(500)

    def _expired(self) -> None:
        if self.dispatched is None:
            return
        self.dispatched.cancel()
        self.dispatched = None
        message = (
            f"activator request timeout: pod {self.grant.address} did not answer within the revision "
            f"timeout of {self.revision.config.timeout_seconds:g}s"
        )
        self._finish(answer_failure(self.response, 504, message))

    def _finish(self, code: int) -> None:
        activator, revision, routed = self.activator, self.revision, self.routed
        self.timer.cancel()
        activator._release(revision, self.grant)
        activator.metrics.observe_wait(revision.config.namespace, revision.config.name, self.grant.waited)
        activator._reporter.request_out(routed, activator._now())
        activator.metrics.count_request(routed.namespace, routed.name, code)


@dataclass(frozen=True, slots=True)
class BoundPorts:
    serving: int | None
    admin: int | None


class Activator:
    """See the module docstring; the control surface is documented in docs/activator.md."""

    def __init__(
        self,
        *,
        pod_name: str = "activator",
        stat_sink: StatSink | None = None,
        probe_frequency: float = DEFAULT_PROBE_FREQUENCY,
        probe_timeout: float = DEFAULT_PROBE_TIMEOUT,
        activator_index: int = -1,
        activator_count: int = 1,
        report_interval: float = REPORT_INTERVAL,
        rng: random.Random | None = None,
    ) -> None:
        if not probe_timeout > 0:
            raise ActivatorConfigError(f"probe timeout={probe_timeout!r}: must be > 0 seconds")
        PodHealth(probe_frequency)  # validates the frequency with its own message
        check_activator_slot(activator_index, activator_count)
        self.pod_name = pod_name
        self.stat_sink = stat_sink
        self.probe_frequency = probe_frequency
        self.probe_timeout = probe_timeout
        self.report_interval = report_interval
        self.metrics = ActivatorMetrics(self._revision_gauges, lambda: getattr(self.stat_sink, "failed", 0))
        self._rng = rng or random.Random()
        self._slot = (activator_index, activator_count)
        self._revisions: dict[RevisionKey, _Revision] = {}
        self._router = RevisionRouter()
        self._routes: dict[tuple[bytes | None, bytes | None, bytes | None], RevisionKey | RouteMiss] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._reporter: ConcurrencyReporter[RevisionKey] = ConcurrencyReporter(pod_name)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._servers: list[HttpServer] = []
        self._reporting: asyncio.Task[None] | None = None
        self._draining = False
        # Per-revision data-path authentication, checked before a request is held, counted or reported.
        self.auth_gates: dict[RevisionKey, AuthGate] = {}

    # -- control API ---------------------------------------------------------------------------

    def set_revision(self, config: RevisionConfig) -> None:
        """Add a revision or change its settings; held requests stay held."""
        revision = self._revisions.get(config.key)
        if revision is None:
            throttler: RevisionThrottler[_Held] = RevisionThrottler(
                config.container_concurrency, queue_bound=config.queue_bound, rng=self._rng
            )
            self._revisions[config.key] = _Revision(config, throttler, PodHealth(self.probe_frequency))
            self._set_router()
            return
        revision.config = config
        now = self._now()
        self._dispatch(
            revision, revision.throttler.reconfigure(config.container_concurrency, config.queue_bound, now)
        )

    def set_endpoints(self, key: RevisionKey, addresses: Iterable[str]) -> None:
        """The revision's pod queue-proxy addresses, ready or not: new ones are probed at once."""
        revision = self._revision(key)
        wanted = list(addresses)
        for address in wanted:
            parse_address(address)
        if revision.health.set_endpoints(wanted, self._now()):
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
            self._resolve(expired.ticket, expired)
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

    def metrics_text(self) -> str:
        """The Prometheus text of the admin port's ``GET /metrics``."""
        return self.metrics.render().decode()

    def _revision_gauges(self) -> list[RevisionGauges]:
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

    # -- lifecycle -----------------------------------------------------------------------------

    async def start(
        self,
        host: str = "127.0.0.1",
        port: int | None = 8012,
        *,
        admin_port: int | None = None,
        admin_host: str = "127.0.0.1",
        admin_handler: Handler | None = None,
    ) -> BoundPorts:
        """Start reporting stats and, unless ``port`` is None, serving; 0 picks a free port.

        The admin API listens on ``admin_host`` (loopback unless told otherwise, whatever ``host`` is);
        without an ``admin_handler`` it refuses every state-changing call (no admin token).
        """
        self._loop = asyncio.get_running_loop()
        if self._reporting is None:
            self._reporting = self._loop.create_task(self._report_forever())
        serving = admin = None
        if port is not None:
            # A client that hangs up while its request is held must give its place back at once.
            server = HttpServer(self.handle, limits=Limits(cancel_on_client_eof=True), name="activator")
            _, serving = await server.start(host, port)
            self._servers.append(server)
        if admin_port is not None:
            if admin_handler is None:
                from activator.admin import AdminApi

                admin_handler = AdminApi(self).handle
            server = HttpServer(admin_handler, limits=Limits.control(), name="activator-admin")
            _, admin = await server.start(admin_host, admin_port)
            self._servers.append(server)
        return BoundPorts(serving, admin)

    async def stop(self, grace: float = 5.0) -> None:
        """Fail health checks, answer held requests 503, let in-flight ones finish within ``grace``."""
        self._draining = True
        for key in list(self._revisions):
            self.remove_revision(key)
        for server in self._servers:
            server.stop_accepting()
        await asyncio.gather(*(server.shutdown(grace) for server in self._servers))
        self._servers.clear()
        if self._reporting is not None:
            self._reporting.cancel()
            self._reporting = None
        for task in list(self._tasks):
            task.cancel()
        if self.stat_sink is not None:
            await self.stat_sink.close()

    # -- data path -----------------------------------------------------------------------------

    def handle(
        self, request: Request, response: Response, *, in_task: bool = False
    ):  # -> Awaitable[None] | None
        """The serving handler: health checks, routing, then throttled forwarding.

        A request that gets a pod at once and finds an idle pooled connection to it is sent from here
        and finished from the pool's callbacks (:class:`_Exchange`): no task, coroutine or future, and
        None is returned before the response is complete. A caller already running in a task (whose
        end would end the response) passes ``in_task=True`` and always gets an awaitable for forwarded
        requests. Any other request goes through :meth:`_serve` in a task.
        """
        probe = request.header(b"k-network-probe")
        if probe is not None:
            if probe == b"activator":
                response.send(200, b"activator")
            else:
                body = b"unexpected K-Network-Probe value %s; the activator answers 'activator'\n" % probe
                response.send(400, body)
            return
        user_agent = request.header(b"user-agent") or b""
        if user_agent.startswith(b"kube-probe/") or request.header(b"k-kubelet-probe") is not None:
            if self._draining:
                response.send(500, b"activator shutting down\n")
            else:
                response.send(200, b"ok\n")
            return
        host = request.header(b"host")
        header = request.header
        route_key = (host, header(b"knative-serving-revision"), header(b"knative-serving-namespace"))
        routed = self._routes.get(route_key)
        if routed is None:
            routed = self._router.route(*(_text(value) for value in route_key))
            if len(self._routes) >= _ROUTE_CACHE_SIZE:
                self._routes.clear()
            self._routes[route_key] = routed
        if isinstance(routed, RouteMiss):
            response.send(404, routed.reason.encode() + b"\n")
            self.metrics.count_request("", "", 404)
            return
        gate = self.auth_gates.get(routed)
        if gate is not None and (screened := gate.screen(request, response, self.handle)) is not PASS:
            return screened
        revision = self._revisions[routed]
        arrived = self._now()
        immediate = self._reporter.request_in(routed, arrived)
        if immediate is not None and self.stat_sink is not None:
            self.stat_sink.send([RevisionStat(routed.namespace, routed.name, immediate)])
        throttler = revision.throttler
        ticket = _Held()
        cold = throttler.capacity == 0
        deadline = arrived + revision.config.timeout_seconds
        outcome = throttler.acquire(ticket, arrived, deadline)
        if in_task:
            return self._serve_in_task(
                revision, routed, ticket, cold, outcome, request, response, host, deadline
            )
        if outcome.__class__ is Grant:
            exchange = _Exchange(self, revision, routed, outcome, request, response, host, deadline)
            if exchange.dispatch():
                return None
        self._start_serving(revision, routed, ticket, cold, outcome, request, response, host, deadline)
        return None

    def _start_serving(
        self,
        revision: _Revision,
        routed: RevisionKey,
        ticket: _Held,
        cold: bool,
        outcome: Grant[_Held] | Admission,
        request: Request,
        response: Response,
        host: bytes | None,
        deadline: float,
    ) -> None:
        """Serve in a task of our own that always runs, so its accounting does too.

        A task cancelled before its first step never runs its coroutine (no ``finally``), which would
        leave the ticket queued or its grant and the reported concurrency held for good; so a client
        that leaves before the task starts only marks the ticket, and the task cleans up when it starts.
        """
        task = self._loop.create_task(
            self._serve_in_task(revision, routed, ticket, cold, outcome, request, response, host, deadline)
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        response.on_abort = lambda: task.cancel() if ticket.started else _mark_gone(ticket)

    async def _serve_in_task(
        self,
        revision: _Revision,
        routed: RevisionKey,
        ticket: _Held,
        cold: bool,
        outcome: Grant[_Held] | Admission,
        request: Request,
        response: Response,
        host: bytes | None,
        deadline: float,
    ) -> None:
        ticket.started = True
        code = 500
        try:
            if ticket.gone:  # the client left before this task began
                self._abandon(revision, ticket, outcome)
                return
            code = await self._serve(revision, ticket, cold, outcome, request, response, host, deadline)
        except Exception:  # a bug must still answer the client, not leave it waiting
            log.exception("activator failed serving a request for %s", revision.config.key)
            answer_failure(response, 500, "activator: internal error; see its log")
        finally:
            self._reporter.request_out(routed, self._now())
            self.metrics.count_request(routed.namespace, routed.name, code)

    async def _serve(
        self,
        revision: _Revision,
        ticket: _Held,
        cold: bool,
        outcome: Grant[_Held] | Admission,
        request: Request,
        response: Response,
        host: bytes | None,
        deadline: float,
    ) -> int:
        """The throttled forwarding of one request that cannot go at once (or whose pod refused it)."""
        config = revision.config
        throttler = revision.throttler
        if outcome is Admission.REJECTED:
            body = (
                f"activator: revision {config.key} already holds {throttler.waiting} requests waiting for "
                f"capacity (queue bound {throttler.effective_queue_bound}); retry later\n"
            )
            response.send(503, body.encode(), [(b"retry-after", b"%d" % RETRY_AFTER_SECONDS)])
            return 503
        add_headers = _proxy_headers(host)
        waited = 0.0
        try:
            while True:
                if outcome is Admission.QUEUED:
                    cold = cold or throttler.capacity == 0
                    outcome = await self._wait(revision, ticket)
                if isinstance(outcome, Expired):
                    waited = outcome.waited
                    return self._answer_expired(revision, response, outcome)
                grant: Grant[_Held] | None = outcome
                waited = grant.waited
                timer = _Deadline(self._loop, deadline)
                try:
                    return await revision.pool(grant.address).forward(
                        request,
                        WithHeader(response, _COLD_START[cold]),
                        host=grant.tracker.host_header,
                        add_headers=add_headers,
                    )
                except UpstreamConnectError as exc:
                    # Nothing was sent: distrust the pod, then send the request elsewhere or hold it again.
                    log.info("pod %s of %s refused a request (%s); retrying", grant.address, config.key, exc)
                    self._pod_refused(revision, grant.address)
                    if revision.removed:
                        response.send(503, b"activator: revision %s was removed\n" % str(config.key).encode())
                        return 503
                    outcome, others = throttler.retry(grant, self._now(), deadline)
                    grant = None
                    self._dispatch(revision, others)
                except UpstreamError as exc:
                    message = f"activator: pod {grant.address} failed: {exc}"
                    return answer_failure(response, 502, message)
                except asyncio.CancelledError:
                    if not timer.expired:
                        raise
                    timer.task.uncancel()
                    message = (
                        f"activator request timeout: pod {grant.address} did not answer within the revision "
                        f"timeout of {config.timeout_seconds:g}s"
                    )
                    return answer_failure(response, 504, message)
                finally:
                    timer.cancel()
                    if grant is not None:
                        self._release(revision, grant)
        finally:
            self.metrics.observe_wait(config.namespace, config.name, waited)

    async def _wait(self, revision: _Revision, ticket: _Held) -> Grant[_Held] | Expired[_Held]:
        if ticket.result is None:  # not admitted or expired yet: wait for either
            future = ticket.future = self._loop.create_future()
            self._arm_expiry(revision)
            try:
                await future
            except asyncio.CancelledError:  # the client went away while held
                self._abandon(revision, ticket, Admission.QUEUED)
                raise
            finally:
                ticket.future = None
        result, ticket.result = ticket.result, None
        return result

    def _abandon(self, revision: _Revision, ticket: _Held, outcome: Grant[_Held] | Admission) -> None:
        """The client left: give back its place in the queue, or the slot it was granted."""
        ticket.gone = True
        if outcome.__class__ is Grant:
            self._release(revision, outcome)
        elif not revision.throttler.cancel(ticket) and isinstance(ticket.result, Grant):
            self._release(revision, ticket.result)
        ticket.result = None

    def _answer_expired(self, revision: _Revision, response: Response, expired: Expired[_Held]) -> int:
        if self._draining:
            status, body = 503, "activator shutting down; retry\n"
        elif revision.removed:
            status = 503
            body = f"activator: revision {revision.config.key} was removed while this request waited\n"
        else:
            status = 504
            body = f"activator request timeout: waited {expired.waited:.1f}s for capacity"
            if revision.failure is not None:
                body += f"; last pod failure: {revision.failure}"
            body += "\n"
        response.send(status, body.encode())
        return status

    # -- capacity events -------------------------------------------------------------------------

    def _release(self, revision: _Revision, grant: Grant[_Held]) -> None:
        self._dispatch(revision, revision.throttler.release(grant, self._now()))

    def _dispatch(self, revision: _Revision, grants: list[Grant[_Held]]) -> None:
        """Wake admitted waiters; one whose client left gives its slot straight back."""
        while grants:
            grant = grants.pop()
            if not self._resolve(grant.ticket, grant):
                grants.extend(revision.throttler.release(grant, self._now()))

    @staticmethod
    def _resolve(ticket: _Held, result: Grant[_Held] | Expired[_Held]) -> bool:
        """Hand ``result`` to the ticket's waiter, even one whose code has not started; False if gone."""
        if ticket.gone or ticket.result is not None:
            return False
        ticket.result = result
        future = ticket.future
        if future is not None and not future.done():
            future.set_result(None)
        return True

    def _arm_expiry(self, revision: _Revision) -> None:
        deadline = revision.throttler.next_deadline()
        timer = revision.expiry
        if timer is not None:
            if deadline is not None and timer.when() <= deadline:
                return
            timer.cancel()
            revision.expiry = None
        if deadline is not None:
            revision.expiry = asyncio.get_running_loop().call_at(deadline, self._expire, revision)

    def _expire(self, revision: _Revision) -> None:
        revision.expiry = None
        for expired in revision.throttler.expire(self._now()):
            self._resolve(expired.ticket, expired)
        self._arm_expiry(revision)

    def _update_backends(self, revision: _Revision) -> None:
        index, count = self._slot
        grants = revision.throttler.update_backends(
            revision.health.healthy, self._now(), activator_index=index, activator_count=count
        )
        self._dispatch(revision, grants)

    def _pod_refused(self, revision: _Revision, address: str) -> None:
        if revision.health.mark_failed(address, self._now()):
            self._update_backends(revision)
            self._schedule_probes(revision)

    # -- probing ---------------------------------------------------------------------------------

    def _schedule_probes(self, revision: _Revision) -> None:
        if revision.removed:
            return
        loop = asyncio.get_running_loop()
        for address in revision.health.due(self._now()):
            self._spawn(self._probe(revision, address))
        if revision.probe_timer is not None:
            revision.probe_timer.cancel()
            revision.probe_timer = None
        due = revision.health.next_due()
        if due is not None:
            revision.probe_timer = loop.call_at(due, self._schedule_probes, revision)

    async def _probe(self, revision: _Revision, address: str) -> None:
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
        if revision.health.record(address, ok, self._now(), refused=refused):
            log.info("pod %s of %s passed its probe", address, revision.config.key)
            self._update_backends(revision)
        self._schedule_probes(revision)

    # -- stats -----------------------------------------------------------------------------------

    async def _report_forever(self) -> None:
        loop = asyncio.get_running_loop()
        next_tick = loop.time() + self.report_interval
        while True:
            await asyncio.sleep(max(0.0, next_tick - loop.time()))
            next_tick += self.report_interval
            stats = self._reporter.report(self._now())
            if stats and self.stat_sink is not None:
                self.stat_sink.send([RevisionStat(key.namespace, key.name, stat) for key, stat in stats])

    # -- helpers ---------------------------------------------------------------------------------

    def _revision(self, key: RevisionKey) -> _Revision:
        revision = self._revisions.get(key)
        if revision is None:
            known = ", ".join(str(k) for k in self.revisions()) or "(none)"
            raise KeyError(f"unknown revision {key}; known revisions: {known}")
        return revision

    def _set_router(self) -> None:
        self._router = RevisionRouter(self._revisions)
        self._routes = {}

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _now(self) -> float:
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        return loop.time()


def _text(value: bytes | None) -> str | None:
    return value.decode("latin-1") if value is not None else None


def _mark_gone(ticket: _Held) -> None:
    ticket.gone = True
