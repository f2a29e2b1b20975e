"""The queue-proxy's request path: probes, drain, timeouts, breaker, stats, then the user container.

In Knative's order (pkg/queue/sharedmain/handlers.go), outermost first:

1. Health checks — kubelet probes (``User-Agent: kube-probe/…`` or ``K-Kubelet-Probe``), the
   activator's and autoscaler's probe agents, and any ``K-Network-Probe: queue`` — are answered from
   the cached readiness: ``200 queue``, ``503`` while not ready or draining, ``400`` for a probe whose
   ``K-Network-Probe`` is not ``queue``. ``K-Network-Probe: probe`` echoes ``K-Network-Hash``.
   None of them count as traffic or reach the user container.
2. Data-path authentication, when the revision asks for it (``queueproxy.gate``): a request
   without valid credentials is answered 401/403 here and is neither counted nor proxied.
3. Every other request restarts the drain quiet period and is counted in the request stats
   (proxied apart when ``K-Proxy-Request: activator``) from arrival to the end of its response —
   time spent queued in the breaker included, as Knative does.
4. Timeouts: the revision timeout always, the response-start and idle timeouts when set. Before
   any byte of the response: ``504 request timeout``; after: the connection is dropped.
5. Breaker (``containerConcurrency`` > 0): at most cc requests at the user container, at most
   queue-depth more waiting in FIFO order, the rest get ``503`` at once.
6. Proxy: ``K-Original-Host`` becomes Host again, Knative's revision headers are stripped, and an
   unreachable or failing user container gives ``502``.

Speed: a request that can go at once (a breaker slot free, an idle pooled connection, its body in
hand) never becomes a task — it is dispatched from the parser callback and finished from the
upstream's, with no coroutine, future or timer of its own (``_Proxied.dispatch``). Everything else
(waiting in the queue, connecting, streaming a body) runs as a coroutine (``_Proxied.run``). Timeouts
for both are checked by one ticker (``Timeouts``) every 50 ms.
"""

from __future__ import annotations

import asyncio
import time

from httpengine.errors import UpstreamError
from httpengine.request import Request
from httpengine.response import Response, ResponseSink, answer_failure
from httpengine.upstream import Dispatched, UpstreamPool
from queueproxy.breaker import Admission, Breaker
from queueproxy.config import QueueProxyConfig
from queueproxy.drain import Drainer
from queueproxy.gate import PASS, AuthGate
from queueproxy.metrics import RequestMetrics
from queueproxy.payload_log import PayloadLogger
from queueproxy.readiness import Readiness
from queueproxy.stats import RequestStats

KUBE_PROBE_UA = b"kube-probe/"
PROBE_HOLD_SECONDS = 0.25  # a cold pod's health check waits this long for readiness
HEALTH_CHECK_UAS = (KUBE_PROBE_UA, b"Knative-Activator-Probe", b"Knative-Autoscaling-Probe")
# Knative's revision headers are for the activator; the user container never sees them.
STRIPPED_HEADERS = frozenset({b"knative-serving-revision", b"knative-serving-namespace", b"k-original-host"})
TIMEOUT_MESSAGE = "request timeout"
TIMEOUT_TICK = 0.05  # seconds; how late a timeout may fire


class Timeouts:
    """Knative's three request timeouts for every in-flight request, checked on one shared ticker.

    A timer per request would cost more than the rest of the proxy's bookkeeping together; the
    price is that a timeout fires up to ``TIMEOUT_TICK`` late.
    """

    def __init__(self, config: QueueProxyConfig, loop: asyncio.AbstractEventLoop) -> None:
        self.revision = config.revision_timeout
        self.response_start = config.response_start_timeout
        self.idle = config.idle_timeout
        self.loop = loop
        self.active: set[_Proxied] = set()
        self._ticker: asyncio.TimerHandle | None = None

    def track(self, request: _Proxied) -> None:
        self.active.add(request)
        if self._ticker is None:
            self._ticker = self.loop.call_later(TIMEOUT_TICK, self._tick)

    def expired(self, request: _Proxied, now: float) -> bool:
        started, response = request.started, request.response
        if now - started >= self.revision:
            return True
        if self.response_start and not response.started and now - started >= self.response_start:
            return True
        return bool(self.idle) and now - (response.last_write or started) >= self.idle

    def _tick(self) -> None:
        now = time.monotonic()
        for request in [r for r in self.active if self.expired(r, now)]:
            request.expire()
        self._ticker = self.loop.call_later(TIMEOUT_TICK, self._tick) if self.active else None


class _Proxied:
    """One request on its way to the user container, from arrival to the end of its response."""

    __slots__ = (
        "admitted",
        "app_started",
        "app_status",
        "dispatched",
        "expired",
        "finished",
        "handler",
        "holds_slot",
        "proxied",
        "request",
        "response",
        "sink",
        "started",
        "task",
        "waiter",
    )

    def __init__(
        self, handler: QueueProxyHandler, request: Request, response: Response, started: float, proxied: bool
    ) -> None:
        self.handler = handler
        self.request = request
        self.response = response
        self.sink: ResponseSink = response  # where the answer is written: a copying one when logging
        self.started = started
        self.proxied = proxied
        self.admitted = False  # set by the breaker's release when it was queued
        self.holds_slot = False
        self.expired = False
        self.finished = False
        self.app_started = started  # when it went to the user container: at once unless it queued
        self.app_status = 0  # the status the user container answered with; 0 until it has
        self.dispatched: Dispatched | None = None
        self.task: asyncio.Task | None = None
        self.waiter: asyncio.Future[None] | None = None

    # -- the fast path: no task -----------------------------------------------------------
    def dispatch(self) -> bool:
        handler = self.handler
        dispatched = handler.pool.dispatch(
            self.request,
            self.sink,
            self._upstream_done,
            host=self.request.index.get(b"k-original-host"),
            drop_headers=STRIPPED_HEADERS,
        )
        if dispatched is None:
            return False
        self.dispatched = dispatched
        self.response.on_abort = self._client_gone
        return True

    def _upstream_done(self, result: int | BaseException) -> None:
        self.dispatched = None
        if isinstance(result, BaseException):
            answer_failure(self.response, 502, str(result), close=False)
        else:
            self.app_status = result
        self._finish()

    def _client_gone(self) -> None:
        if self.dispatched is not None:
            self.dispatched.cancel()
            self.dispatched = None
            self._finish()

    # -- the slow path: a coroutine --------------------------------------------------------
    async def run(self, queued: bool) -> None:
        handler = self.handler
        self.task = asyncio.current_task(handler.loop)
        try:
            if handler.payload_log is not None and not self.request.body.complete:
                await handler.payload_log.await_body(self.request)  # as KServe's agent: the body first
            if queued:
                await self._admission()
                self.app_started = time.monotonic()
            self.app_status = await handler.pool.forward(
                self.request,
                self.sink,
                host=self.request.header(b"k-original-host"),
                drop_headers=STRIPPED_HEADERS,
            )
        except UpstreamError as exc:
            answer_failure(self.response, 502, str(exc), close=False)
        except asyncio.CancelledError:
            if not self.expired:
                raise  # the client went away
            task = self.task
            assert task is not None  # set above: run() is awaited as a task
            task.uncancel()
            answer_failure(self.response, 504, TIMEOUT_MESSAGE, close=False)
        finally:
            self._finish()

    async def _admission(self) -> None:
        if not self.admitted:
            self.waiter = self.handler.loop.create_future()
            try:
                await self.waiter
            except asyncio.CancelledError:
                breaker = self.handler.breaker
                assert breaker is not None  # only a breaker queues
                if not self.admitted:
                    breaker.cancel(self)
                raise
        self.holds_slot = True

    def admit(self) -> None:
        """Called when the breaker hands this queued request a slot."""
        self.admitted = True
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    # -- either path -----------------------------------------------------------------------
    def expire(self) -> None:
        if self.finished or self.expired:
            return
        self.expired = True
        if self.task is not None:
            self.task.cancel()
        elif self.dispatched is not None:
            self.dispatched.cancel()
            self.dispatched = None
            answer_failure(self.response, 504, TIMEOUT_MESSAGE, close=False)
            self._finish()

    def _finish(self) -> None:
        if self.finished:
            return
        self.finished = True
        handler = self.handler
        handler.timeouts.active.discard(self)
        if self.admitted and not self.holds_slot:
            self.holds_slot = True  # admitted while being cancelled: the slot is ours to pass on
        if self.holds_slot:
            handler.release()
        ended = time.monotonic()
        handler.stats.request_out(ended, self.proxied)
        status = self.response.status
        if status:
            handler.metrics.observe(status, (ended - self.started) * 1000.0)
        if self.app_status:  # the user container answered it in full
            handler.metrics.observe_app(self.app_status, (ended - self.app_started) * 1000.0)


class QueueProxyHandler:
    """The serving port's handler; one instance per queue-proxy process."""

    # What each request becomes; tracing (queueproxy.tracing) swaps in a subclass that makes spans.
    request_class: type[_Proxied] = _Proxied

    def __init__(
        self,
        config: QueueProxyConfig,
        pool: UpstreamPool,
        stats: RequestStats,
        readiness: Readiness,
        drainer: Drainer,
        metrics: RequestMetrics,
        gate: AuthGate | None = None,
        payload_log: PayloadLogger | None = None,
    ) -> None:
        self.pool = pool
        self.payload_log = payload_log  # KServe's inference logger (queueproxy.payload_log); None: off
        self.gate = gate
        self.stats = stats
        self.readiness = readiness
        self.drainer = drainer
        self.metrics = metrics
        self.loop = asyncio.get_running_loop()
        self.timeouts = Timeouts(config, self.loop)
        cc = config.container_concurrency
        self.breaker: Breaker[_Proxied] | None = None
        if cc > 0:
            depth = config.effective_queue_depth
            self.breaker = Breaker(queue_depth=depth, max_concurrency=cc)
            self.queue_full_body = (
                f"pending request queue full: containerConcurrency={cc}, queue depth={depth}\n".encode()
            )

    @property
    def queued(self) -> int:
        return self.breaker.waiting if self.breaker else 0

    def __call__(
        self, request: Request, response: Response, *, in_task: bool = False
    ):  # -> Awaitable[None] | None
        """Serve one request; ``in_task`` (a caller already in a task) rules out the no-task fast path."""
        index = request.index
        network_probe = index.get(b"k-network-probe")
        user_agent = index.get(b"user-agent")
        if (
            network_probe == b"queue"
            or (user_agent is not None and user_agent.startswith(HEALTH_CHECK_UAS))
            or index.get(b"k-kubelet-probe")
        ):
            return self._health_check(network_probe, response)
        if network_probe == b"probe":
            self._network_probe(request, response)
            return None
        gate = self.gate
        if gate is not None and (screened := gate.screen(request, response, self)) is not PASS:
            return screened
        started = time.monotonic()
        drainer = self.drainer
        if drainer.draining_since is not None:  # only a drain's quiet period depends on request times
            drainer.touch(started)
        proxied = index.get(b"k-proxy-request") == b"activator"
        self.stats.request_in(started, proxied)
        proxied_request = self.request_class(self, request, response, started, proxied)
        if self.payload_log is not None:
            proxied_request.sink = self.payload_log.capture(request, response)
        queued = False
        breaker = self.breaker
        if breaker is not None:
            admission = breaker.acquire(proxied_request)
            if admission is Admission.REJECTED:
                self.metrics.reject()
                response.send(503, self.queue_full_body)
                proxied_request._finish()
                return None
            queued = admission is Admission.QUEUED
            proxied_request.holds_slot = not queued
        self.timeouts.track(proxied_request)
        if not queued and not in_task and proxied_request.dispatch():
            return None
        return proxied_request.run(queued)

    def release(self) -> None:
        """A request left its breaker slot: admit the next ones in line."""
        breaker = self.breaker
        assert breaker is not None  # only a breaker hands out slots
        for waiting in breaker.release():
            waiting.admit()

    def _health_check(self, network_probe: bytes | None, response: Response):  # -> Awaitable | None
        if self.drainer.draining:
            response.send(503, b"shutting down\n")
        elif network_probe != b"queue":
            response.send(400, b"unexpected probe header value: %s\n" % (network_probe or b""))
        elif not self.readiness.ready:
            return self._hold_probe(response)
        else:
            response.send(200, b"queue")
        return None

    async def _hold_probe(self, response: Response) -> None:
        """Answer a probe of a cold pod the moment the user container becomes ready.

        Like Knative's queue-proxy, which runs the readiness probe inside the health check: the
        activator then learns of a new pod within one aggressive probe interval instead of at its
        next 200 ms probe tick. The hold stays below the activator's 300 ms probe timeout.
        """
        try:
            async with asyncio.timeout(PROBE_HOLD_SECONDS):
                await self.readiness.wait_ready()
        except TimeoutError:
            pass
        if self.drainer.draining:
            response.send(503, b"shutting down\n")
        elif self.readiness.ready:
            response.send(200, b"queue")
        else:
            response.send(503, f"user container not ready: {self.readiness.last_error}\n".encode())

    def _network_probe(self, request: Request, response: Response) -> None:
        if self.drainer.draining:
            response.send(503, b"shutting down\n")
            return
        network_hash = request.header(b"k-network-hash")
        if not network_hash:
            response.send(400, b'a probe request must contain a non-empty "K-Network-Hash" header\n')
        else:
            response.send(200, b"", headers=[(b"k-network-hash", network_hash)])
