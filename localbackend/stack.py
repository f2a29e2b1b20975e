"""The embedded local stack: autoscaler, activator and an entry point in one process, pods as local
processes (``localbackend.actuator``). `kpa up` runs it from the command line; tests and benchmarks
run it inside their own event loop.

One entry address serves every revision (``localbackend.entry``: by Host or ``/r/<revision>/``,
through the activator in proxy mode, straight to the pods in serve mode). The autoscaler service
flips the mode; the entry follows at once. The admin port answers
``GET /status`` (JSON, what `kpa up`'s live table and `kpa status` show), ``GET /metrics``
(Prometheus text of the autoscaler and the activator) and ``POST /stats`` (stats pushed by an
external activator). It listens on ``admin_host`` (loopback unless told otherwise, whatever
``host`` is), and every call but a GET needs ``Authorization: Bearer <admin token>``; see
docs/security.md.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from activator.config import RevisionConfig
from activator.server import Activator
from activator.sinks import CallbackStatSink, RevisionStat
from autoscaler.actuator import PodInfo, ready_pods
from autoscaler.exposition import exposition_off_loop
from autoscaler.service import AutoscalerService, parse_stat_push
from autoscaler.stat import RevisionKey, StatError
from httpengine.limits import Limits
from httpengine.request import Request
from httpengine.response import Response
from httpengine.server import HttpServer
from localbackend.actuator import LocalActuator
from localbackend.entry import Entry
from localbackend.pod import ENTRY_URL_ENV, PodFailure, PodTemplate
from localbackend.scrape_file import ScrapeTargetFile
from localbackend.scrape_targets import stack_endpoints, user_metrics_path
from localbackend.stack_file import RevisionSpec, StackConfig
from queueproxy.auth import TokenSet, check_admin
from queueproxy.gate import AuthGate
from tracing.config import TracingConfig

DEFAULT_PORT = 8080
DEFAULT_ADMIN_PORT = 8081
LOOPBACK = "127.0.0.1"
ADMIN_REALM = "kpa-up-admin"
_JSON = b"application/json"
_TEXT = b"text/plain; version=0.0.4; charset=utf-8"


def pod_template(spec: RevisionSpec, tracing: TracingConfig | None = None) -> PodTemplate:
    """What a pod of ``spec`` runs; ``tracing`` (the stack's) reaches both of its processes by env."""
    tracing_env = tracing.to_env() if tracing is not None else {}
    return PodTemplate(
        revision=RevisionKey(spec.namespace, spec.name),
        command=spec.command,
        port_env=spec.port_env,
        env={**tracing_env, **spec.env},
        workdir=spec.workdir,
        container_concurrency=spec.container_concurrency,
        timeout_seconds=spec.timeout_seconds,
        response_start_timeout_seconds=spec.response_start_timeout_seconds,
        idle_timeout_seconds=spec.idle_timeout_seconds,
        startup_timeout=spec.startup_timeout_seconds,
        readiness_probe=spec.readiness_probe,
        queue_proxy_env={
            **(spec.auth.env() if spec.auth is not None else {}),
            **(spec.logger.env() if spec.logger is not None else {}),
            **tracing_env,
        },
    )


class LocalStack:
    """Everything `kpa up` runs, usable in-process (tests, benchmarks) as well as from the CLI."""

    def __init__(
        self,
        stack: StackConfig,
        *,
        host: str = "127.0.0.1",
        port: int = DEFAULT_PORT,
        admin_port: int = DEFAULT_ADMIN_PORT,
        admin_host: str = LOOPBACK,
        admin_token: str | None = None,
        log_dir: str | Path | None = None,
        max_pods: int | None = None,
        prometheus_targets: str | Path | None = None,
    ) -> None:
        """``log_dir``: where pod output goes (None: a temporary directory, removed by ``stop``);
        ``max_pods``: the capacity cap (None: the stack file's ``maxPods``, else the machine's default);
        ``prometheus_targets``: a file_sd target file kept true while the stack runs (None: none)."""
        self.stack = stack
        self.host = host
        self.port = port
        self.admin_port = admin_port
        self.admin_host = admin_host
        # Needed by every admin call but a GET; generated unless given (the CLI writes it to --ready-file).
        self.admin_token = admin_token or secrets.token_urlsafe(32)
        self._admin_tokens = TokenSet([self.admin_token])
        self._own_log_dir = not log_dir
        self.log_dir = Path(log_dir) if log_dir else Path(tempfile.mkdtemp(prefix="kpa-up-"))
        self.refs = [RevisionKey(s.namespace, s.name) for s in stack.revisions]
        self.actuator = LocalActuator(
            [pod_template(s, stack.tracing) for s in stack.revisions],
            self.log_dir,
            max_pods=max_pods if max_pods is not None else stack.max_pods,
        )
        self._tracing = None  # (tracer, provider) of the embedded activator when the stack traces
        if stack.tracing.enabled:
            from tracing.provider import tracer_for  # OpenTelemetry is imported only when tracing

            self._tracing = tracer_for(stack.tracing, "activator")
        self.activator = Activator(
            pod_name="kpa-up-activator",
            stat_sink=CallbackStatSink(self._activator_stats),
            tracer=self._tracing[0] if self._tracing else None,
        )
        self.service = AutoscalerService(self.actuator)
        # The admin port's /metrics: the autoscaler's families, then the embedded activator's.
        self.collectors = (self.service.metrics, self.activator.metrics)
        max_idle = {RevisionKey(s.namespace, s.name): s.container_concurrency or 100 for s in stack.revisions}
        timeouts = {RevisionKey(s.namespace, s.name): float(s.timeout_seconds) for s in stack.revisions}
        self.entry = Entry(self.activator, self.refs, max_idle, timeouts)
        for spec, ref in zip(stack.revisions, self.refs, strict=True):
            if spec.auth is not None:
                self.entry.gates[ref] = AuthGate.load(spec.name, spec.auth)
        self.targets = ScrapeTargetFile(Path(prometheus_targets)) if prometheus_targets else None
        self._user_metrics = {
            (spec.namespace, spec.name): user_metrics_path(spec.annotations) for spec in stack.revisions
        }
        self._servers: list[HttpServer] = []
        self._stopping = False
        self.started_at = time.time()
        self.entry_url = ""
        self.admin_url = ""

    async def start(self) -> None:
        for spec, ref in zip(self.stack.revisions, self.refs, strict=True):
            self.activator.set_revision(
                RevisionConfig(
                    spec.name,
                    spec.namespace,
                    spec.container_concurrency,
                    float(spec.timeout_seconds),
                    queue_bound=spec.activator_queue_bound,
                )
            )
            self.service.add_revision(ref, spec.settings)
        self.actuator.subscribe(self._pods_changed)
        self.actuator.subscribe(self._write_targets)
        self.actuator.subscribe_failures(self._pod_failure)
        self.service.on_mode_change(self.entry.set_mode)
        await self.activator.start(port=None)  # reporting only: the entry calls its handler directly
        for gate in self.entry.gates.values():
            gate.prefetch()
        entry = HttpServer(self.entry.handle, limits=Limits(cancel_on_client_eof=True), name="entry")
        _, port = await entry.start(self.host, self.port)
        self._servers.append(entry)
        admin = HttpServer(self._admin, limits=Limits.control(), name="admin")
        _, admin_port = await admin.start(self.admin_host, self.admin_port)
        self._servers.append(admin)
        self.entry_url = f"http://{self.host}:{port}"
        self.actuator.add_user_env({ENTRY_URL_ENV: self.entry_url})
        self.admin_url = f"http://{self.admin_host}:{admin_port}"
        self._write_targets()
        await self.actuator.start()
        await self.service.start()
        for spec, ref in zip(self.stack.revisions, self.refs, strict=True):
            # The Deployment's replicas at creation: the initial scale (Knative's default is 1).
            self.actuator.set_desired_scale(ref, spec.settings.initial_scale)
        self.started_at = time.time()

    async def stop(self) -> None:
        """Stop spawning pods at once, stop serving (held requests get 503), stop deciding, then stop
        every pod; a log directory the stack made itself is removed."""
        self._stopping = True
        self.actuator.stop_spawning()
        for server in self._servers:
            server.stop_accepting()
        await self.service.close()
        await self.activator.stop(grace=2.0)
        await asyncio.gather(*(server.shutdown(2.0) for server in self._servers))
        await self.actuator.close()
        if self._tracing is not None:
            self._tracing[1].shutdown()  # sends the activator's spans still buffered
        if self.targets is not None:
            self.targets.clear()
        for backends in self.entry.backends.values():
            backends.set_pods([], 0)
        if self._own_log_dir:
            shutil.rmtree(self.log_dir, ignore_errors=True)

    def _pods_changed(self, ref: RevisionKey, pods: Sequence[PodInfo]) -> None:
        if self._stopping:
            return  # the activator already let go of its revisions
        # The activator gets the ready pods and probes each new one at once. (Knative hands it not-ready
        # pods too and lets its 200 ms probe loop find them first; here the actuator's own 50 ms
        # readiness probe is quicker, so waiting for it saves ~100 ms of every cold start.)
        key = RevisionKey(ref.namespace, ref.name)
        ready = ready_pods(pods)
        self.activator.set_endpoints(key, [p.address for p in ready])
        self.entry.set_ready_pods(ref, ready)

    def _write_targets(self, *_changed: object) -> None:
        """Rewrite the Prometheus target file (an actuator listener: any pod of any revision changed)."""
        if self.targets is not None and not self._stopping:
            admin = self.admin_url.removeprefix("http://")
            self.targets.write(stack_endpoints(admin, self.actuator.metrics_ports(), self._user_metrics))

    def _pod_failure(self, ref: RevisionKey, failure: PodFailure | None) -> None:
        """Requests the activator holds for a failing revision are told why (not the output tail:
        a pod's output may hold what a client must not see)."""
        if not self._stopping:
            reason = f"{failure.pod} {failure.reason}" if failure is not None else None
            self.activator.set_revision_failure(RevisionKey(ref.namespace, ref.name), reason)

    def _activator_stats(self, stats: Sequence[RevisionStat]) -> None:
        self.service.record_pushed((RevisionKey(s.namespace, s.revision), s.stat) for s in stats)

    def status(self) -> dict[str, Any]:
        return {
            "entry": self.entry_url,
            "admin": self.admin_url,
            "uptime_s": round(time.time() - self.started_at, 1),
            "time": time.time(),
            "log_dir": str(self.log_dir),
            "revisions": [row.to_json() for row in self.service.status()],  # pending_pods included
            "capacity": self.actuator.capacity(),
            "activator": [self.activator.revision_status(k) for k in self.activator.revisions()],
            "served": {"direct": self.entry.served_direct, "via_activator": self.entry.served_proxied},
            "pod_pids": self.actuator.process_ids(),
        }

    async def _admin(self, request: Request, response: Response) -> None:
        path, method = request.path, request.method
        if method not in (b"GET", b"HEAD"):
            denial = check_admin(request.header(b"authorization"), self._admin_tokens)
            if denial is not None:
                challenge = denial.challenge(ADMIN_REALM)
                headers = [(b"www-authenticate", challenge)] if challenge else []
                response.send(denial.status, json.dumps({"error": denial.reason}).encode(), headers, _JSON)
                return
        if path == "/status" and method == b"GET":
            response.send(200, json.dumps(self.status()).encode(), content_type=_JSON)
        elif path == "/metrics" and method == b"GET":
            response.send(200, await exposition_off_loop(self.collectors), content_type=_TEXT)
        elif path == "/stats" and method == b"POST":
            try:
                entries = parse_stat_push(json.loads(await request.body.read_all(1 << 20)))
            except (ValueError, StatError) as exc:
                response.send(400, json.dumps({"error": str(exc)}).encode(), content_type=_JSON)
                return
            self.service.record_pushed(entries)
            response.send(200, json.dumps({"accepted": len(entries)}).encode(), content_type=_JSON)
        elif path == "/healthz":
            response.send(200, b"ok\n")
        else:
            response.send(404, b"not found; the admin port serves GET /status, GET /metrics, POST /stats\n")
