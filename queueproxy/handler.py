"""The queue-proxy's request path: probes, drain, timeouts, breaker, stats, then the user container.

In Knative's order (pkg/queue/sharedmain/handlers.go), outermost first:

1. Health checks — kubelet probes (``User-Agent: kube-probe/…`` or ``K-Kubelet-Probe``), the
   activator's and autoscaler's probe agents, and any ``K-Network-Probe: queue`` — are answered from
   the cached readiness: ``200 queue``, ``503`` while not ready or draining, ``400`` for a probe whose
   ``K-Network-Probe`` is not ``queue``. ``K-Network-Probe: probe`` echoes ``K-Network-Hash``.
   None of them count as traffic or reach the user container.
2. Every other request restarts the drain quiet period and is counted in the request stats
   (proxied apart when ``K-Proxy-Request: activator``) from arrival to the end of its response —
   time spent queued in the breaker included, as Knative does.
3. Timeouts: the revision timeout always, the response-start and idle timeouts when set. Before
   any byte of the response: ``504 request timeout``; after: the connection is dropped.
4. Breaker (``containerConcurrency`` > 0): at most cc requests at the user container, at most
   queue-depth more waiting in FIFO order, the rest get ``503`` at once.
5. Proxy: ``K-Original-Host`` becomes Host again, Knative's revision headers are stripped, and an
   unreachable or failing user container gives ``502``.
"""

from __future__ import annotations

import asyncio
import time

from queueproxy.breaker import Admission, Breaker
from queueproxy.config import QueueProxyConfig
from queueproxy.drain import Drainer
from queueproxy.http11 import Request, Response
from queueproxy.metrics import RequestMetrics
from queueproxy.readiness import Readiness
from queueproxy.stats import RequestStats
from queueproxy.upstream import UpstreamError, UpstreamPool

KUBE_PROBE_UA = b"kube-probe/"
HEALTH_CHECK_UAS = (KUBE_PROBE_UA, b"Knative-Activator-Probe", b"Knative-Autoscaling-Probe")
# Knative's revision headers are for the activator; the user container never sees them.
STRIPPED_HEADERS = frozenset({b"knative-serving-revision", b"knative-serving-namespace", b"k-original-host"})
TIMEOUT_BODY = b"request timeout\n"


class BreakerGate:
    """The asyncio shell around the pure ``Breaker``: a future per waiting request."""

    def __init__(self, breaker: Breaker[asyncio.Future[None]]) -> None:
        self.breaker = breaker

    async def enter(self) -> bool:
        """Wait for a slot; False when the queue is full (answer 503 at once)."""
        ticket = asyncio.get_running_loop().create_future()
        admission = self.breaker.acquire(ticket)
        if admission is Admission.ADMITTED:
            return True
        if admission is Admission.REJECTED:
            return False
        try:
            await ticket
        except asyncio.CancelledError:
            if ticket.cancelled():
                # Still queued: leave the queue. Already popped by ``leave``: it gave the slot back.
                self.breaker.cancel(ticket)
            else:
                self.leave()  # admitted in the same instant we were cancelled: hand the slot on
            raise
        return True

    def leave(self) -> None:
        admitted = self.breaker.release()
        while admitted:
            ticket = admitted.pop(0)
            if ticket.done():  # its request gave up while being admitted: pass the slot on
                admitted.extend(self.breaker.release())
            else:
                ticket.set_result(None)


class _Deadlines:
    """Knative's three request timeouts on one timer; cancels the request's task when one expires."""

    __slots__ = ("expired", "handler", "response", "started", "task", "timer")

    def __init__(self, handler: QueueProxyHandler, response: Response, started: float) -> None:
        self.handler = handler
        self.response = response
        self.started = started
        self.task = asyncio.current_task()
        self.expired = False
        self.timer = handler.loop.call_later(handler.first_deadline, self._check)

    def _check(self) -> None:
        response = self.response
        if response.finished:
            return
        handler = self.handler
        now = time.monotonic()
        due = self.started + handler.revision_timeout
        if handler.response_start_timeout and not response.started:
            due = min(due, self.started + handler.response_start_timeout)
        if handler.idle_timeout:
            due = min(due, (response.last_write or self.started) + handler.idle_timeout)
        if now >= due:
            self.expired = True
            self.task.cancel()
        else:
            self.timer = handler.loop.call_later(due - now, self._check)

    def cancel(self) -> None:
        self.timer.cancel()


class QueueProxyHandler:
    """The serving port's handler; one instance per queue-proxy process."""

    def __init__(
        self,
        config: QueueProxyConfig,
        pool: UpstreamPool,
        stats: RequestStats,
        readiness: Readiness,
        drainer: Drainer,
        metrics: RequestMetrics,
    ) -> None:
        self.pool = pool
        self.stats = stats
        self.readiness = readiness
        self.drainer = drainer
        self.metrics = metrics
        self.revision_timeout = config.revision_timeout
        self.response_start_timeout = config.response_start_timeout
        self.idle_timeout = config.idle_timeout
        self.first_deadline = min(t for t in (config.revision_timeout, config.response_start_timeout,
                                              config.idle_timeout) if t > 0)  # fmt: skip
        self.loop = asyncio.get_running_loop()
        cc = config.container_concurrency
        self.gate: BreakerGate | None = None
        if cc > 0:
            depth = config.effective_queue_depth
            self.gate = BreakerGate(Breaker(queue_depth=depth, max_concurrency=cc))
            self.queue_full_body = (
                f"pending request queue full: containerConcurrency={cc}, queue depth={depth}\n".encode()
            )

    @property
    def queued(self) -> int:
        return self.gate.breaker.waiting if self.gate else 0

    async def __call__(self, request: Request, response: Response) -> None:
        header = request.header
        user_agent = header(b"user-agent") or b""
        network_probe = header(b"k-network-probe")
        if network_probe == b"queue" or user_agent.startswith(HEALTH_CHECK_UAS) or header(b"k-kubelet-probe"):
            self._health_check(network_probe, response)
            return
        if network_probe == b"probe":
            self._network_probe(request, response)
            return
        started = time.monotonic()
        self.drainer.touch(started)
        proxied = header(b"k-proxy-request") == b"activator"
        self.stats.request_in(started, proxied)
        try:
            await self._serve(request, response, started)
        finally:
            ended = time.monotonic()
            self.stats.request_out(ended, proxied)
            if response.status:
                self.metrics.observe(response.status, (ended - started) * 1000.0)

    async def _serve(self, request: Request, response: Response, started: float) -> None:
        deadlines = _Deadlines(self, response, started)
        try:
            gate = self.gate
            if gate is None:
                await self._forward(request, response)
            elif await gate.enter():
                try:
                    await self._forward(request, response)
                finally:
                    gate.leave()
            else:
                self.metrics.reject()
                response.send(503, self.queue_full_body)
        except asyncio.CancelledError:
            if not deadlines.expired:
                raise
            deadlines.task.uncancel()
            if not response.started:
                response.send(504, TIMEOUT_BODY)
            elif not response.finished:
                response.abort()
        finally:
            deadlines.cancel()

    async def _forward(self, request: Request, response: Response) -> None:
        try:
            await self.pool.forward(
                request, response, host=request.header(b"k-original-host"), drop_headers=STRIPPED_HEADERS
            )
        except UpstreamError as exc:
            if not response.started:
                response.send(502, f"{exc}\n".encode())
            elif not response.finished:
                response.abort()

    def _health_check(self, network_probe: bytes | None, response: Response) -> None:
        if self.drainer.draining:
            response.send(503, b"shutting down\n")
        elif network_probe != b"queue":
            response.send(400, b"unexpected probe header value: %s\n" % (network_probe or b""))
        elif not self.readiness.ready:
            response.send(503, f"user container not ready: {self.readiness.last_error}\n".encode())
        else:
            response.send(200, b"queue")

    def _network_probe(self, request: Request, response: Response) -> None:
        if self.drainer.draining:
            response.send(503, b"shutting down\n")
            return
        network_hash = request.header(b"k-network-hash")
        if not network_hash:
            response.send(400, b'a probe request must contain a non-empty "K-Network-Hash" header\n')
        else:
            response.send(200, b"", headers=[(b"k-network-hash", network_hash)])
