"""The queue-proxy process: four listeners, the prober, the stats reporter, and the drain on SIGTERM.

Ports (Knative's defaults): serving 8012 (proxy to the user container), admin 8022
(``GET /wait-for-drain`` for the user container's preStop hook), stats 9090 (``GET /stats``: the
last one-second ``Stat`` as JSON, the autoscaler's scrape target) and metrics 9091 (``GET /metrics``:
Prometheus text). Any port may be 0; ``start`` returns the bound ones and the CLI prints them as
one JSON line so a parent process can find them. Only serving listens on ``host``: admin and
metrics listen on ``admin_host``, stats on ``stats_host``, both loopback unless configured (none of
them changes state, so none needs a token; see docs/security.md).

``/wait-for-drain`` changes nothing by itself: it waits for the SIGTERM the kubelet sends the
queue-proxy as the pod stops (while it runs the user container's preStop hook), then for the drain
that SIGTERM starts. Called without a SIGTERM
following within ``SIGTERM_GRACE_FOR_PRESTOP`` (a container restart, or anyone who can reach the
admin port) it answers at once and the pod stays ready: a GET cannot fail its health checks.

Shutdown: SIGTERM starts the drain — health checks fail with 503 at once, traffic is still served,
and once no request has arrived for the drain timeout the serving port stops accepting, in-flight
requests finish (up to the revision timeout) and the process exits 0. SIGINT skips the quiet period.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import time
from typing import TYPE_CHECKING

from autoscaler.stat import Stat
from httpengine.limits import Limits
from httpengine.request import Request
from httpengine.response import Response
from httpengine.server import HttpServer
from httpengine.upstream import UpstreamPool
from queueproxy.auth import AuthConfigError
from queueproxy.config import QueueProxyConfig, QueueProxyConfigError
from queueproxy.drain import Drainer, DrainWaiter
from queueproxy.gate import AuthGate
from queueproxy.handler import QueueProxyHandler
from queueproxy.metrics import GaugeReading, RequestMetrics
from queueproxy.payload_log import PayloadLogger
from queueproxy.readiness import Readiness
from queueproxy.stats import RequestStats

if TYPE_CHECKING:
    from opentelemetry.trace import Tracer

log = logging.getLogger(__name__)

REPORTING_PERIOD = 1.0  # seconds; Knative's queue-proxy reports once a second
SIGTERM_GRACE_FOR_PRESTOP = 1.0  # /wait-for-drain without a SIGTERM this soon: a restart, not a stop
JSON = b"application/json"


class QueueProxy:
    def __init__(self, config: QueueProxyConfig, tracer: Tracer | None = None) -> None:
        """``tracer``: make spans with it (queueproxy.tracing); ``serve`` makes it from ``config.tracing``."""
        self.config = config
        self.tracer = tracer
        self.started_at = time.monotonic()
        self.stats = RequestStats(self.started_at)
        self.readiness = Readiness(config.probes)
        self.drain = DrainWaiter(Drainer(config.drain_timeout))
        self.metrics = RequestMetrics(
            config.pod_name, self._gauges, namespace=config.namespace, revision=config.revision,
            configuration=config.configuration, service=config.service,
        )  # fmt: skip
        self.pool = UpstreamPool(config.user_host, config.user_port, max_idle=config.max_idle_connections)
        self.payload_log: PayloadLogger | None = None  # made in start(): it needs the running loop
        self.stat = Stat(pod_name=config.pod_name)
        self._stat_body = json.dumps(self.stat.to_json()).encode()
        self._stopping = asyncio.Event()
        self._sigterm = False
        self._tasks: list[asyncio.Task] = []
        self.handler: QueueProxyHandler | None = None
        self.serving: HttpServer | None = None
        self.admin: HttpServer | None = None
        self.stats_server: HttpServer | None = None
        self.metrics_server: HttpServer | None = None

    async def start(self) -> dict[str, int]:
        """Bind all four ports and start probing and reporting; returns the bound ports.

        Raises QueueProxyConfigError when the data-path authentication settings cannot be used (an unreadable
        tokens file), OSError when a port cannot be bound.
        """
        config = self.config
        gate = None
        if config.auth is not None:
            try:
                gate = AuthGate.load(config.revision or config.pod_name, config.auth)
            except AuthConfigError as exc:
                raise QueueProxyConfigError(str(exc)) from None
            gate.prefetch()
        if config.logger is not None:
            self.payload_log = PayloadLogger(config.logger)
            self.metrics.registry.register(self.payload_log)
            self.payload_log.start()
        self.handler = QueueProxyHandler(
            config, self.pool, self.stats, self.readiness, self.drain.drainer, self.metrics, gate,
            self.payload_log,
        )  # fmt: skip
        if self.tracer is not None:
            from queueproxy.tracing import traced_requests  # OpenTelemetry is imported only when tracing

            self.handler.request_class = traced_requests(self.tracer, config.revision, config.pod_name)
        self.serving = serving = HttpServer(self.handler, name="serving")
        # A few connections each on the control ports: a flood there cannot take the descriptors that
        # the serving port's cap leaves for them, for the user container's probes and for /stats.
        self.admin = admin = HttpServer(self._admin, limits=Limits.control(), name="admin")
        self.stats_server = stats_server = HttpServer(self._stats, limits=Limits.control(), name="stats")
        self.metrics_server = metrics_server = HttpServer(
            self._metrics, limits=Limits.control(), name="metrics"
        )
        ports = {}
        for key, server, host, port in (
            ("serving_port", serving, config.host, config.serving_port),
            ("admin_port", admin, config.admin_host, config.admin_port),
            ("stats_port", stats_server, config.stats_host, config.stats_port),
            ("metrics_port", metrics_server, config.admin_host, config.metrics_port),
        ):
            try:
                _, ports[key] = await server.start(host, port)
            except OSError as exc:
                await self._close_servers(0.0)
                raise OSError(f"cannot listen on {host}:{port} ({key}): {exc.strerror or exc}") from exc
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self.readiness.run()), loop.create_task(self._report_loop())]
        return ports

    def install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self.terminate)
        loop.add_signal_handler(signal.SIGINT, self.interrupt)

    def terminate(self) -> None:
        """SIGTERM: drain, then stop."""
        if not self._sigterm:
            log.info("SIGTERM: draining (quiet period %gs)", self.config.drain_timeout)
        self._sigterm = True
        self.drain.start()
        self._stopping.set()

    def interrupt(self) -> None:
        """SIGINT: stop without the quiet period (in-flight requests still finish)."""
        self.drain.drainer.quiet_period = 0.0
        self.terminate()

    async def run(self) -> int:
        """Serve until SIGTERM/SIGINT and the drain completes; returns the exit status."""
        await self._stopping.wait()
        await self.drain.wait()
        log.info("drained; finishing in-flight requests")
        await self._close_servers(self.config.revision_timeout)
        return 0

    async def _close_servers(self, grace: float) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self.serving is not None:  # a server that never started shuts down at once
            await self.serving.shutdown(grace)
        for server in (self.admin, self.stats_server, self.metrics_server):
            if server is not None:
                await server.shutdown(1.0)
        self.pool.close()
        if self.payload_log is not None:
            await self.payload_log.close()  # at most FLUSH_GRACE: a hanging sink never holds up exit

    # -- stats -----------------------------------------------------------------------------
    async def _report_loop(self) -> None:
        tick = self.started_at
        while True:
            tick += REPORTING_PERIOD
            await asyncio.sleep(max(0.0, tick - time.monotonic()))
            now = time.monotonic()
            report = self.stats.report(now)
            self.stat = Stat(
                pod_name=self.config.pod_name,
                average_concurrent_requests=report.average_concurrency,
                average_proxied_concurrent_requests=report.average_proxied_concurrency,
                request_count=report.request_count / REPORTING_PERIOD,
                proxied_request_count=report.proxied_request_count / REPORTING_PERIOD,
                process_uptime=now - self.started_at,
                timestamp=time.time(),
            )
            self._stat_body = json.dumps(self.stat.to_json()).encode()

    async def _stats(self, request: Request, response: Response) -> None:
        if request.path in ("/stats", "/metrics") and request.method in (b"GET", b"HEAD"):
            response.send(200, self._stat_body, content_type=JSON)
        else:
            response.send(404, b"not found; the stats port serves GET /stats\n")

    async def _metrics(self, request: Request, response: Response) -> None:
        if request.path != "/metrics" or request.method not in (b"GET", b"HEAD"):
            response.send(404, b"not found; the metrics port serves GET /metrics\n")
            return
        response.send(200, self.metrics.render(), content_type=b"text/plain; version=0.0.4; charset=utf-8")

    def _gauges(self) -> tuple[GaugeReading, ...]:
        """The /metrics rows read from the live proxy when scraped."""
        stat = self.stat
        queued = self.handler.queued if self.handler is not None else 0  # scraped once started
        return (
            ("kpa_queue_requests_in_flight", "Requests in the queue-proxy now, queued ones included.",
             self.stats.concurrency),
            ("revision_queue_depth", "Requests waiting in the breaker queue now.", queued),
            ("queue_average_concurrent_requests", "Average concurrency over the last reporting second.",
             stat.average_concurrent_requests),
            ("queue_average_proxied_concurrent_requests", "The part of it that came through the activator.",
             stat.average_proxied_concurrent_requests),
            ("queue_requests_per_second", "Requests that arrived in the last reporting second.",
             stat.request_count),
            ("queue_proxied_operations_per_second", "The part of them that came through the activator.",
             stat.proxied_request_count),
            ("kpa_queue_user_container_ready", "1 when the user container passes its readiness probe.",
             1.0 if self.readiness.ready else 0.0),
            ("process_uptime", "Seconds since the queue-proxy started.", time.monotonic() - self.started_at),
        )  # fmt: skip

    # -- admin -----------------------------------------------------------------------------
    async def _admin(self, request: Request, response: Response) -> None:
        if request.path != "/wait-for-drain":
            response.send(404, b"not found; the admin port serves GET /wait-for-drain\n")
            return
        log.info("preStop: /wait-for-drain called")
        if not self._stopping.is_set():
            try:
                async with asyncio.timeout(SIGTERM_GRACE_FOR_PRESTOP):
                    await self._stopping.wait()
            except TimeoutError:
                response.send(200, b"not draining: no SIGTERM followed\n")
                return
        await self.drain.wait()
        response.send(200, b"drained\n")


async def serve(config: QueueProxyConfig, announce=print) -> int:
    """Run a queue-proxy until it is told to stop; ``announce`` receives the bound-ports JSON line."""
    tracing = None
    if config.tracing.enabled:
        from tracing.provider import TracingConfigError, tracer_for

        try:
            tracing = tracer_for(config.tracing, "queue-proxy")
        except TracingConfigError as exc:  # an exporter that is not installed
            raise QueueProxyConfigError(str(exc)) from None
    proxy = QueueProxy(config, tracing[0] if tracing else None)
    ports = await proxy.start()
    proxy.install_signal_handlers()
    announce(json.dumps(ports))
    log.info(
        "queue-proxy %s: serving %s:%d -> %s:%d, containerConcurrency=%d, queue depth=%d",
        config.pod_name, config.host, ports["serving_port"], config.user_host, config.user_port,
        config.container_concurrency, config.effective_queue_depth,
    )  # fmt: skip
    try:
        return await proxy.run()
    finally:
        if tracing is not None:
            tracing[1].shutdown()  # sends the spans still buffered
