"""The activator's request path: one request from its arrival to its one answer.

Health checks are answered here; any other request is routed to a revision, screened by the
revision's authentication, counted for the autoscaler, queued in the revision's throttler and served
by one coroutine (``_serve``) that waits for a pod while the revision has no capacity, forwards, and
on a refused connection distrusts the pod and tries another. Every request gets exactly one complete
answer — the pod's, or a failure answer (``answer_failure``) whose body says why: 404 no such
revision, 503 queue full / revision removed / shutting down, 504 no capacity or no answer within the
revision's timeout, 502 the pod failed it, 500 a bug here.

That coroutine runs in a task the activator owns (``spawn``), not in the connection's: a task
cancelled before its first step never runs its ``finally``, which would leave the request queued, or
its pod slot and its reported concurrency held, for good. The revision table
(``activator.revisions``) hands each request its pod or its deadline through its ``Ticket``.
"""

from __future__ import annotations

import asyncio
import logging

from activator.metrics import ActivatorMetrics
from activator.reporter import ConcurrencyReporter
from activator.revisions import RevisionTable, RoutedRevision, Spawn, Ticket
from activator.routing import RouteMiss
from activator.sinks import RevisionStat, StatSink
from activator.throttler import Expired, Grant
from autoscaler.stat import RevisionKey
from httpengine.errors import UpstreamConnectError, UpstreamError
from httpengine.request import Request
from httpengine.response import HeaderLine, Response, WithHeader, answer_failure
from queueproxy.breaker import Admission
from queueproxy.gate import PASS, AuthGate

log = logging.getLogger(__name__)

# Response header saying whether the request was held while its revision had no pod to take it.
COLD_START_HEADER = b"x-kpa-cold-start"
RETRY_AFTER_SECONDS = 1
_RETRY_AFTER = ((b"retry-after", b"%d" % RETRY_AFTER_SECONDS),)
_PROXIED = (b"k-proxy-request", b"activator")
_COLD_START = {cold: HeaderLine(COLD_START_HEADER, b"true" if cold else b"false") for cold in (True, False)}

Outcome = Grant[Ticket] | Admission  # what the throttler said when the request arrived


class _Deadline:
    """Cancels the current task at ``when`` (loop time), remembering it did — cheaper than asyncio.timeout."""

    __slots__ = ("expired", "handle", "task")

    def __init__(self, loop: asyncio.AbstractEventLoop, when: float) -> None:
        task = asyncio.current_task()
        assert task is not None, "a deadline cancels the task it is created in"
        self.task = task
        self.expired = False
        self.handle = loop.call_at(when, self._fire)

    def _fire(self) -> None:
        self.expired = True
        self.task.cancel()

    def cancel(self) -> None:
        self.handle.cancel()


class RequestPath:
    """Serves the activator's data port; ``draining`` (set at shutdown) fails health checks and tells
    requests still held that the activator is shutting down."""

    def __init__(
        self,
        table: RevisionTable,
        *,
        reporter: ConcurrencyReporter[RevisionKey],
        metrics: ActivatorMetrics,
        stat_sink: StatSink | None,
        auth_gates: dict[RevisionKey, AuthGate],
        spawn: Spawn,
    ) -> None:
        self._table = table
        self._reporter = reporter
        self._metrics = metrics
        self._stat_sink = stat_sink
        self._auth_gates = auth_gates
        self._spawn = spawn
        self.draining = False

    def handle(
        self, request: Request, response: Response, *, in_task: bool = False
    ):  # -> Awaitable[None] | None
        """The serving handler: health checks, routing, then throttled forwarding.

        A forwarded request is served in a task of the activator's own and None is returned before its
        response is complete; a caller already running in a task of its own that lasts until the
        response is done (an authentication gate, ``kpa up``'s entry) passes ``in_task=True`` and gets
        the awaitable to await instead.
        """
        probe = request.header(b"k-network-probe")
        if probe is not None:
            if probe == b"activator":
                response.send(200, b"activator")
            else:
                body = b"unexpected K-Network-Probe value %s; the activator answers 'activator'\n" % probe
                response.send(400, body)
            return None
        user_agent = request.header(b"user-agent") or b""
        if user_agent.startswith(b"kube-probe/") or request.header(b"k-kubelet-probe") is not None:
            if self.draining:
                response.send(500, b"activator shutting down\n")
            else:
                response.send(200, b"ok\n")
            return None
        header = request.header
        host = header(b"host")
        table = self._table
        route = (host, header(b"knative-serving-revision"), header(b"knative-serving-namespace"))
        revision = table.route(route)
        if isinstance(revision, RouteMiss):
            answer_failure(response, 404, revision.reason, close=False)
            self._metrics.observe_request("", "", 404, 0.0)
            return None
        key = revision.key
        gate = self._auth_gates.get(key)
        if gate is not None and (screened := gate.screen(request, response, self.handle)) is not PASS:
            return screened
        arrived = table.now()
        immediate = self._reporter.request_in(key, arrived)
        if immediate is not None and self._stat_sink is not None:
            self._stat_sink.send([RevisionStat(key.namespace, key.name, immediate)])
        throttler = revision.throttler
        ticket = Ticket(arrived)
        cold = throttler.capacity == 0
        deadline = arrived + revision.config.timeout_seconds
        outcome = throttler.acquire(ticket, arrived, deadline)
        serving = self._serve_in_task(revision, ticket, cold, outcome, request, response, host, deadline)
        if in_task:
            return serving
        task = self._spawn(serving)

        def client_gone() -> None:
            if ticket.started:
                task.cancel()
            else:  # cancelling a task before it starts would skip its cleanup: it cleans up when it starts
                ticket.gone = True

        response.on_abort = client_gone
        return None

    async def _serve_in_task(
        self,
        revision: RoutedRevision,
        ticket: Ticket,
        cold: bool,
        outcome: Outcome,
        request: Request,
        response: Response,
        host: bytes | None,
        deadline: float,
    ) -> None:
        """``_serve`` with the accounting that must run whatever happens: the request leaves the stats."""
        ticket.started = True
        code = 500
        try:
            if ticket.gone:  # the client left before this task began
                self._abandon(revision, ticket, outcome)
                return
            code = await self._serve(revision, ticket, cold, outcome, request, response, host, deadline)
        except Exception:  # a bug must still answer the client, not leave it waiting
            log.exception("activator failed serving a request for %s", revision.key)
            answer_failure(response, 500, "activator: internal error; see its log")
        finally:
            key = revision.key
            now = self._table.now()
            self._reporter.request_out(key, now)
            self._metrics.observe_request(key.namespace, key.name, code, (now - ticket.arrived) * 1000.0)

    async def _serve(
        self,
        revision: RoutedRevision,
        ticket: Ticket,
        cold: bool,
        outcome: Outcome,
        request: Request,
        response: Response,
        host: bytes | None,
        deadline: float,
    ) -> int:
        """Wait for a pod if need be, forward, and answer; returns the status the client got."""
        config = revision.config
        throttler = revision.throttler
        if outcome is Admission.REJECTED:
            message = (
                f"activator: revision {config.key} already holds {throttler.waiting} requests waiting for "
                f"capacity (queue bound {throttler.effective_queue_bound}); retry later"
            )
            return answer_failure(response, 503, message, close=False, headers=_RETRY_AFTER)
        table = self._table
        add_headers = (_PROXIED, (b"k-original-host", host)) if host is not None else (_PROXIED,)
        loop = asyncio.get_running_loop()
        waited = 0.0
        try:
            while True:
                if isinstance(outcome, Grant):
                    result: Grant[Ticket] | Expired[Ticket] = outcome
                else:  # queued: wait for a pod or the deadline
                    cold = cold or throttler.capacity == 0
                    result = await self._wait(revision, ticket)
                if isinstance(result, Expired):
                    waited = result.waited
                    return self._answer_expired(revision, response, result)
                grant = result
                waited = grant.waited
                timer = _Deadline(loop, deadline)
                retried = False
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
                    table.pod_refused(revision, grant.address)
                    if revision.removed:
                        message = f"activator: revision {config.key} was removed"
                        return answer_failure(response, 503, message, close=False)
                    outcome, others = throttler.retry(grant, table.now(), deadline)  # gives the slot back
                    retried = True
                    table.dispatch(revision, others)  # may admit the retried ticket: its result waits for it
                except UpstreamError as exc:
                    return answer_failure(response, 502, f"activator: pod {grant.address} failed: {exc}")
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
                    if not retried:
                        table.release(revision, grant)
        finally:
            self._metrics.observe_wait(config.namespace, config.name, waited, cold)

    async def _wait(self, revision: RoutedRevision, ticket: Ticket) -> Grant[Ticket] | Expired[Ticket]:
        if ticket.result is None:  # not admitted or expired yet: wait for either
            future = ticket.future = asyncio.get_running_loop().create_future()
            self._table.arm_expiry(revision)
            try:
                await future
            except asyncio.CancelledError:  # the client went away while held
                self._abandon(revision, ticket, Admission.QUEUED)
                raise
            finally:
                ticket.future = None
        result, ticket.result = ticket.result, None
        assert result is not None, "a waiter wakes only once its ticket has a result"
        return result

    def _abandon(self, revision: RoutedRevision, ticket: Ticket, outcome: Outcome) -> None:
        """The client left: give back its place in the queue, or the slot it was granted."""
        ticket.gone = True
        if isinstance(outcome, Grant):
            self._table.release(revision, outcome)
        elif not revision.throttler.cancel(ticket) and isinstance(ticket.result, Grant):
            self._table.release(revision, ticket.result)
        ticket.result = None

    def _answer_expired(self, revision: RoutedRevision, response: Response, expired: Expired[Ticket]) -> int:
        """A held request's wait ended without a pod: shutdown, its revision removed, or its deadline."""
        if self.draining:
            status, message = 503, "activator shutting down; retry"
        elif revision.removed:
            status = 503
            message = f"activator: revision {revision.key} was removed while this request waited"
        else:
            status = 504
            message = f"activator request timeout: waited {expired.waited:.1f}s for capacity"
            if revision.failure is not None:
                message += f"; last pod failure: {revision.failure}"
        return answer_failure(response, status, message, close=False)
