"""`kpa controller` wired: the watches, the autoscaler loop, its Kubernetes actuator, the flip, the API.

One process, one asyncio loop. Seven informers (``kubebackend.informer``; each a list/watch thread
handing changes to the loop) keep the caches everything else reads, so a tick never asks the API
server anything:

* ``deployments`` — every Deployment (enrolled ones, KServe predictors, the scale we set):
  enrollments, actuator, flipper;
* ``inferenceservices`` — every KServe InferenceService (404 without KServe: empty): enrollments;
* ``pods`` — every Pod (a revision's, by its Deployment's selector): actuator;
* ``config`` — ``config-autoscaler`` in the config namespace (a field selector): enrollments;
* ``services``, ``endpointslices`` — the ones we own (our revision label, our managed-by label),
  so a write happens only when what is stored differs: flipper;
* ``activator-endpoints`` — the activator Service's slices (``kubernetes.io/service-name``): flipper.

Leader election is a seam: :meth:`Controller.start` starts the informers and the status API (a
standby keeps warm caches, answers ``/healthz`` and the webhook's lookups), and the autoscaler loop,
enrollment and every write begin only in :meth:`Controller.became_leader` — the elector's
``on_started_leading`` (`kpa controller` runs ``kubebackend.leader_election``; ``start(lead=True)``
leads at once, for tests). :meth:`Controller.stopped_leading`, its ``on_stopped_leading``, stops
every write at once; leading again later starts every revision afresh, in panic.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
import socket
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from kubernetes import client
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from autoscaler.exposition import exposition_off_loop
from autoscaler.service import DECIDE_INTERVAL, SCRAPE_INTERVAL, AutoscalerService
from autoscaler.stat import RevisionKey, Stat
from kubebackend.actuator import KubeActuator
from kubebackend.endpoints import MANAGED_BY, MANAGED_BY_LABEL, REVISION_LABEL, SERVICE_NAME_LABEL
from kubebackend.enrollments import Enrollments
from kubebackend.events import EventRecorder
from kubebackend.flipper import Flipper
from kubebackend.informer import Informer
from kubebackend.rbac import ACTIVATOR, CONFIG_MAP, SYSTEM_NAMESPACE
from kubebackend.sidecar import SidecarSpec
from kubebackend.status_api import StatusServer
from kubebackend.webhook import NotReady
from tracing.config import TracingConfig

log = logging.getLogger("kpa.controller")

KSERVE = ("serving.kserve.io", "v1beta1", "inferenceservices")
SYNC_REPORT_S = 10.0  # while informers have not listed, say which every this often


@dataclass(frozen=True, slots=True)
class ControllerOptions:
    """Where the controller finds its configuration and the activators, and where it serves."""

    config_namespace: str = SYSTEM_NAMESPACE
    config_name: str = CONFIG_MAP
    activator_namespace: str = SYSTEM_NAMESPACE
    activator_service: str = ACTIVATOR
    host: str = "0.0.0.0"
    port: int = 8080
    api_workers: int = 8  # threads for API writes (scale, Services, slices, Events)
    scrape_interval: float = SCRAPE_INTERVAL  # Knative's: scrape every second, decide every two
    decide_interval: float = DECIDE_INTERVAL
    watch_timeout_s: float = 300.0
    instance: str = ""  # this replica's name in Events (default: the host name, i.e. the pod's)


class Controller:
    """Everything `kpa controller` runs, usable in-process (tests) as well as from the command line."""

    def __init__(self, configuration: client.Configuration, options: ControllerOptions | None = None) -> None:
        """``configuration`` points the official client at the API server (its connection pool is
        widened here: one connection per watch plus the writers')."""
        self.options = options = options or ControllerOptions()
        configuration.connection_pool_maxsize = max(
            configuration.connection_pool_maxsize or 0, 7 + options.api_workers + 4
        )
        self.api_client = client.ApiClient(configuration)
        core = client.CoreV1Api(self.api_client)
        apps = client.AppsV1Api(self.api_client)
        discovery = client.DiscoveryV1Api(self.api_client)
        custom = client.CustomObjectsApi(self.api_client)
        self.executor = ThreadPoolExecutor(options.api_workers, thread_name_prefix="kpa-api")
        rng = random.Random()

        def informer(kind: str, call: Any, label: str | None = None, field: str | None = None) -> Informer:
            return Informer(
                kind, call, label_selector=label, field_selector=field,
                watch_timeout_s=options.watch_timeout_s, rng=rng,
            )  # fmt: skip

        self.informers: dict[str, Informer] = {
            "deployments": informer("Deployment", apps.list_deployment_for_all_namespaces),
            "inferenceservices": informer(
                "InferenceService", functools.partial(custom.list_cluster_custom_object, *KSERVE)
            ),
            "pods": informer("Pod", core.list_pod_for_all_namespaces),
            "config": informer(
                "ConfigMap",
                functools.partial(core.list_namespaced_config_map, options.config_namespace),
                field=f"metadata.name={options.config_name}",
            ),
            "services": informer("Service", core.list_service_for_all_namespaces, label=REVISION_LABEL),
            "endpointslices": informer(
                "EndpointSlice",
                discovery.list_endpoint_slice_for_all_namespaces,
                label=f"{MANAGED_BY_LABEL}={MANAGED_BY}",
            ),
            "activator-endpoints": informer(
                "EndpointSlice",
                functools.partial(discovery.list_namespaced_endpoint_slice, options.activator_namespace),
                label=f"{SERVICE_NAME_LABEL}={options.activator_service}",
            ),
        }
        i = self.informers
        self.events = EventRecorder(core, self.executor, instance=options.instance or socket.gethostname())
        self.actuator = KubeActuator(
            apps, i["deployments"], i["pods"], executor=self.executor, events=self.events, rng=rng
        )
        self.service = AutoscalerService(
            self.actuator,
            rng=rng,
            scrape_interval=options.scrape_interval,
            decide_interval=options.decide_interval,
        )
        self.flipper = Flipper(
            core, discovery, self.service, self.actuator,
            i["deployments"], i["services"], i["endpointslices"], i["activator-endpoints"],
            executor=self.executor, events=self.events, rng=rng, serving_settings=self._serving_settings,
        )  # fmt: skip
        self.enrollments = Enrollments(
            self.service, self.actuator, i["deployments"], i["inferenceservices"], i["config"],
            config_name=options.config_name, events=self.events,
        )  # fmt: skip
        self.enrollments.on_removed(self.flipper.remove)
        self.enrollments.on_serving_changed(self.flipper.settings_changed)
        self.collectors = (self.service.metrics, _ControllerMetrics(self))
        self.status_server = StatusServer(self, options.host, options.port)
        self._leading = False
        self._stopping: asyncio.Future[None] | None = None  # the last stopped_leading's cleanup
        # Set by whoever runs the webhook beside the controller (kpa controller): readiness waits for it.
        self.webhook_expected = False
        self.webhook_serving = False
        self.started_at = time.time()

    # ---- lifecycle ----------------------------------------------------------------------------------

    async def start(self, *, lead: bool = True, sync_timeout: float | None = None) -> None:
        """Serve the status API, start every watch and wait until each has listed; then, with
        ``lead``, become the leader at once (the seam an elector will use instead)."""
        await self.status_server.start()
        for informer in self.informers.values():
            informer.start()
        await self._wait_synced(sync_timeout)
        if lead:
            await self.became_leader()

    async def _wait_synced(self, timeout: float | None) -> None:
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while True:
            waiting = [name for name, informer in self.informers.items() if not informer.synced]
            if not waiting:
                return
            if deadline is not None and loop.time() >= deadline:
                raise TimeoutError(f"informers not synced within {timeout} s: {', '.join(waiting)}")
            step = SYNC_REPORT_S if deadline is None else min(SYNC_REPORT_S, deadline - loop.time())
            pending = [self.informers[name].wait_synced() for name in waiting]
            _, still = await asyncio.wait([asyncio.ensure_future(p) for p in pending], timeout=step)
            for future in still:
                future.cancel()
            if still:
                log.info("waiting for the first list of: %s", ", ".join(waiting))

    async def became_leader(self) -> None:
        """Start deciding and writing: the autoscaler loop, then every enrolled revision (afresh and
        in panic when this replica led before: ``AutoscalerService.start``)."""
        if self._leading:
            return
        if self._stopping is not None:
            await self._stopping  # the loops of the previous term have ended
            if self._leading:
                return
        self._leading = True
        log.info("leading: the autoscaler loop starts")
        self.actuator.resume()
        self.flipper.resume()
        await self.service.start()
        if self._leading:
            self.enrollments.start()

    def stopped_leading(self) -> asyncio.Future[None] | None:
        """Stop scaling and writing at once (the elector's ``on_stopped_leading``): no scale, Service
        or slice write starts after this returns, pending ones are dropped (a request already sent is
        not recalled), and the autoscaler's loops are cancelled; the caches stay warm and the webhook
        keeps answering. Returns the loops' ending, for an elector to await before it releases the
        Lease; None when this replica was not leading."""
        if not self._leading:
            return None
        self._leading = False
        log.warning("no longer leading: scaling and writing stop")
        self.enrollments.stop()
        self.actuator.pause()
        self.flipper.pause()
        self._stopping = asyncio.ensure_future(self.service.close())
        return self._stopping

    @property
    def leading(self) -> bool:
        return self._leading

    @property
    def synced(self) -> bool:
        """Whether every watch has listed once (before that the caches cannot answer questions)."""
        return all(informer.synced for informer in self.informers.values())

    def not_ready(self) -> list[str]:
        """What readiness (``/readyz``) still waits for: the first lists, the webhook listening."""
        waiting = [name for name, informer in self.informers.items() if not informer.synced]
        reasons = [f"waiting for the first list of {', '.join(waiting)}"] if waiting else []
        if self.webhook_expected and not self.webhook_serving:
            reasons.append("the webhook is not listening yet")
        return reasons

    async def stop(self) -> None:
        """Stop deciding, writing, watching and serving; no thread or task is left behind."""
        stopping = self.stopped_leading()
        if stopping is not None:
            await stopping
        await self.service.close()
        await self.flipper.close()
        await self.actuator.close()
        await asyncio.gather(*(informer.close() for informer in self.informers.values()))
        await self.events.close()
        await self.status_server.stop()
        self.executor.shutdown(wait=True, cancel_futures=True)
        self.api_client.close()

    # ---- the sidecar webhook's seam -------------------------------------------------------------------

    def sidecar_lookup(
        self, image: str, tracing: TracingConfig | None = None
    ) -> Callable[[str, Mapping[str, str]], SidecarSpec | None]:
        """The webhook's ``lookup(namespace, pod labels)``: the queue-proxy a new pod gets (``image``,
        tracing as ``tracing``, config-tracing as the controller read it; None: off), or None for a pod
        of no enrolled revision. Answers on a standby replica too. Until every
        watch has listed it raises ``NotReady`` (the webhook refuses the pod with a retryable 503, so
        its ReplicaSet creates it again) rather than answer None for a pod it cannot place yet."""

        def lookup(namespace: str, labels: Mapping[str, str]) -> SidecarSpec | None:
            if not self.synced:
                waiting = ", ".join(name for name, i in self.informers.items() if not i.synced)
                raise NotReady(f"the controller is starting: waiting for the first list of {waiting}")
            found = self.enrollments.revision_of_pod(namespace, labels)
            if found is None:
                return None
            ref, enrollment = found
            return SidecarSpec(
                ref.namespace, ref.name, enrollment.container_concurrency, enrollment.timeout_seconds, image,
                enrollment.logger, enrollment.name, tracing or TracingConfig(),
            )  # fmt: skip

        return lookup

    def _serving_settings(self, ref: RevisionKey) -> tuple[int, int] | None:
        return self.enrollments.serving_settings(ref)

    # ---- what the status API serves -----------------------------------------------------------------

    def record_pushed(self, entries: list[tuple[RevisionKey, Stat]]) -> None:
        self.service.record_pushed(entries)

    def status(self) -> dict[str, Any]:
        modes = self.flipper.modes()
        return {
            "controller": self.events.instance,
            "leader": self._leading,
            "uptime_s": round(time.time() - self.started_at, 1),
            "time": time.time(),
            "revisions": [
                {**row.to_json(), "slice_mode": modes.get(RevisionKey(row.namespace, row.name), "")}
                for row in self.service.status()
            ],
            "refused": [
                {"namespace": ref.namespace, "name": ref.name, "error": error}
                for ref, error in sorted(self.enrollments.refused().items())
            ],
            "config": {
                "namespace": self.options.config_namespace,
                "name": self.options.config_name,
                "error": self.enrollments.config_error,
            },
            "informers": {
                name: {
                    "synced": i.synced,
                    "objects": len(i.items()),
                    "lists": i.lists,
                    "failures": i.failures,
                }
                for name, i in self.informers.items()
            },
            "writes": {"scale": self.actuator.scale_writes, "flip": self.flipper.writes},
        }

    async def metrics(self) -> bytes:
        """``GET /metrics``: the autoscaler's families and the controller's, rendered off the loop."""
        return await exposition_off_loop(self.collectors)


class _ControllerMetrics(Collector):
    """The controller's own families, read when scraped: leadership, watches, API writes."""

    def __init__(self, controller: Controller) -> None:
        self._controller = controller

    def collect(self) -> Iterator[Metric]:
        c = self._controller
        yield GaugeMetricFamily("kpa_controller_leader", "1 while this replica leads", value=int(c.leading))
        by_informer = ("informer",)
        lists = CounterMetricFamily(
            "kpa_controller_informer_lists_total", "Lists (first and re-lists)", labels=by_informer
        )
        failures = CounterMetricFamily(
            "kpa_controller_informer_failures_total",
            "List or watch failures (each backed off)",
            labels=by_informer,
        )
        for name, informer in c.informers.items():
            lists.add_metric((name,), informer.lists)
            failures.add_metric((name,), informer.failures)
        yield lists
        yield failures
        writes = CounterMetricFamily("kpa_controller_api_writes_total", "API writes sent", labels=("kind",))
        writes.add_metric(("scale",), c.actuator.scale_writes)
        writes.add_metric(("flip",), c.flipper.writes)
        yield writes
        yield CounterMetricFamily(
            "kpa_controller_events_total", "Kubernetes Events posted", value=c.events.posted
        )
