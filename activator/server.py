"""The activator process: hold requests while a revision has no capacity, forward them the instant it has.

This is the imperative shell around the pure parts — ``RevisionRouter`` (which revision),
``RevisionThrottler`` (may it go now, and to which pod), ``PodHealth`` (which pods passed a probe)
and ``ConcurrencyReporter`` (what the autoscaler hears). Three modules, one job each:

* ``activator.revisions`` — the revision table: each revision's settings, pods, throttler and timers,
  the control API, probes of pods not yet trusted (every ``probe_frequency`` seconds with a
  ``probe_timeout``) and the capacity events that admit held requests;
* ``activator.forwarding`` — the request path: a held request is an asyncio future, admitted when a
  release, a passing probe or a new endpoint list frees capacity; one timer per revision expires
  waiters at their deadline; every failure answer says why;
* this module — the lifecycle: the serving and admin servers, the stats sent to a ``StatSink`` (at
  once for a revision's first request, then every second), the tasks to cancel at shutdown.

``Activator`` is also the in-process API the local stack embeds (see docs/activator.md): configure
revisions and endpoints with ``set_revision``/``set_endpoints``/``remove_revision``, serve with
``start`` or call ``handle`` from your own ``HttpServer``. Every method must be called from the
event loop's thread.
"""

from __future__ import annotations

import asyncio
import functools
import random
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from activator.forwarding import RequestPath
from activator.metrics import ActivatorMetrics
from activator.probing import DEFAULT_PROBE_FREQUENCY, DEFAULT_PROBE_TIMEOUT
from activator.reporter import ConcurrencyReporter
from activator.revisions import RevisionTable
from activator.sinks import RevisionStat, StatSink
from autoscaler.exposition import exposition_off_loop
from autoscaler.stat import RevisionKey
from httpengine.connection import Handler
from httpengine.limits import Limits
from httpengine.request import Request
from httpengine.response import Response
from httpengine.server import HttpServer
from queueproxy.gate import AuthGate

if TYPE_CHECKING:
    from opentelemetry.trace import Tracer

REPORT_INTERVAL = 1.0


@dataclass(frozen=True, slots=True)
class BoundPorts:
    serving: int | None
    admin: int | None


class Activator(RevisionTable):
    """The revision table (its control API) with the servers, stat reports and shutdown around it.

    See the module docstring; the control surface is documented in docs/activator.md.
    """

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
        tracer: Tracer | None = None,
    ) -> None:
        """``tracer``: make spans with it (activator.tracing, docs/tracing.md); None: tracing off."""
        self._tasks: set[asyncio.Task[None]] = set()
        super().__init__(
            probe_frequency=probe_frequency,
            probe_timeout=probe_timeout,
            activator_index=activator_index,
            activator_count=activator_count,
            rng=rng or random.Random(),
            spawn=self._spawn,
        )
        self.pod_name = pod_name
        self.stat_sink = stat_sink
        self.report_interval = report_interval
        self.metrics = ActivatorMetrics(
            self.revision_gauges, lambda: getattr(self.stat_sink, "failed", 0), pod_name=pod_name
        )
        self._reporter: ConcurrencyReporter[RevisionKey] = ConcurrencyReporter(pod_name)
        # Per-revision data-path authentication, checked before a request is held, counted or reported.
        self.auth_gates: dict[RevisionKey, AuthGate] = {}
        path_class: Callable[..., RequestPath] = RequestPath
        if tracer is not None:
            from activator.tracing import TracedRequestPath  # OpenTelemetry is imported only when tracing

            path_class = functools.partial(TracedRequestPath, tracer=tracer)
        self._path = path_class(
            self,
            reporter=self._reporter,
            metrics=self.metrics,
            stat_sink=stat_sink,
            auth_gates=self.auth_gates,
            spawn=self._spawn,
        )
        self._servers: list[HttpServer] = []
        self._reporting: asyncio.Task[None] | None = None
        # Event-loop time of the first stat report (one every report_interval after it): when in each
        # second the autoscaler hears from us, which `kpa validate` gives its simulation.
        self.first_report: float | None = None

    def handle(
        self, request: Request, response: Response, *, in_task: bool = False
    ):  # -> Awaitable[None] | None
        """The serving handler (an ``httpengine`` handler); see ``RequestPath.handle``."""
        return self._path.handle(request, response, in_task=in_task)

    async def metrics_text(self) -> bytes:
        """The Prometheus text of the admin port's ``GET /metrics``, rendered off the event loop."""
        return await exposition_off_loop([self.metrics])

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

        With an ``admin_port``, ``admin_handler`` serves it (``activator.admin.AdminApi(self,
        token).handle``) on ``admin_host``: loopback unless told otherwise, whatever ``host`` is.
        """
        if admin_port is not None and admin_handler is None:
            raise ValueError(
                f"admin_port={admin_port} without an admin_handler: pass "
                "admin_handler=AdminApi(activator, admin_token).handle (activator.admin)"
            )
        self.now()  # binds the clock to this loop
        if self._reporting is None:
            self._reporting = asyncio.get_running_loop().create_task(self._report_forever())
        serving = admin = None
        if port is not None:
            # A client that hangs up while its request is held must give its place back at once.
            server = HttpServer(self._path.handle, limits=Limits(cancel_on_client_eof=True), name="activator")
            _, serving = await server.start(host, port)
            self._servers.append(server)
        if admin_port is not None and admin_handler is not None:
            server = HttpServer(admin_handler, limits=Limits.control(), name="activator-admin")
            _, admin = await server.start(admin_host, admin_port)
            self._servers.append(server)
        return BoundPorts(serving, admin)

    async def stop(self, grace: float = 5.0) -> None:
        """Fail health checks, answer held requests 503, let in-flight ones finish within ``grace``."""
        self._path.draining = True
        for key in self.revisions():
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

    async def _report_forever(self) -> None:
        loop = asyncio.get_running_loop()
        next_tick = self.first_report = loop.time() + self.report_interval
        while True:
            await asyncio.sleep(max(0.0, next_tick - loop.time()))
            next_tick += self.report_interval
            stats = self._reporter.report(self.now())
            if stats and self.stat_sink is not None:
                self.stat_sink.send([RevisionStat(key.namespace, key.name, stat) for key, stat in stats])

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """Run ``coro`` in a task of ours: it runs to its end unless ``stop`` cancels it."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task
