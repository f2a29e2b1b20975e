"""An activator → queue-proxy → user container chain in one process, each hop tracing into memory.

Every component gets its own tracer provider (as separate processes would), built by
``tracing.provider.tracer_provider`` — the sampler and batching the processes use — with one
in-memory exporter shared by all, so a test reads the spans of the whole chain in one list.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace

import httpx
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from queueproxy_fixtures import UserContainer, client_for, wait_ready
from waiting import wait_until

from activator.config import RevisionConfig
from activator.server import Activator
from autoscaler.stat import RevisionKey
from queueproxy.app import QueueProxy
from queueproxy.config import QueueProxyConfig, default_probe
from tracing.config import TracingConfig
from tracing.provider import INSTRUMENTATION, tracer_provider

KEY = RevisionKey("default", "hello")
ON = TracingConfig("otlp", 1.0, "http://127.0.0.1:1/v1/traces")  # the exporter is replaced: never sent


@dataclass
class Chain:
    user: UserContainer
    proxy: QueueProxy
    activator: Activator
    client: httpx.AsyncClient  # to the activator, Host: hello
    qp_address: str
    exporter: InMemorySpanExporter
    providers: list[TracerProvider]

    def spans(self) -> list[ReadableSpan]:
        for provider in self.providers:
            provider.force_flush()
        return list(self.exporter.get_finished_spans())

    def by_name(self) -> dict[str, ReadableSpan]:
        spans = self.spans()
        named = {span.name: span for span in spans}
        assert len(named) == len(spans), f"one span per name expected: {[s.name for s in spans]}"
        return named


@contextlib.asynccontextmanager
async def chain(
    tracing: TracingConfig | None = ON, *, with_endpoints: bool = True, cc: int = 0
) -> AsyncIterator[Chain]:
    """The chain, traced with ``tracing`` (None: tracing off); the pod is given to the activator at once
    unless ``with_endpoints`` is False (the test then holds requests and calls ``set_endpoints``)."""
    exporter = InMemorySpanExporter()
    providers: list[TracerProvider] = []

    def tracer(service: str):
        if tracing is None:
            return None
        provider = tracer_provider(tracing, service, exporter)
        providers.append(provider)
        return provider.get_tracer(INSTRUMENTATION)

    async with UserContainer() as user:
        config = QueueProxyConfig(
            serving_port=0, admin_port=0, stats_port=0, metrics_port=0, user_port=user.port,
            pod_name="hello-pod", revision="hello", container_concurrency=cc,
            probes=(default_probe("127.0.0.1", user.port),),
        )  # fmt: skip
        proxy = QueueProxy(replace(config, tracing=tracing or TracingConfig()), tracer("queue-proxy"))
        ports = await proxy.start()
        activator = Activator(tracer=tracer("activator"))
        try:
            await wait_ready(proxy)
            served = await activator.start("127.0.0.1", 0)
            activator.set_revision(RevisionConfig("hello", container_concurrency=cc, timeout_seconds=10))
            qp_address = f"127.0.0.1:{ports['serving_port']}"
            if with_endpoints:
                activator.set_endpoints(KEY, [qp_address])
                await wait_until(lambda: activator.revision_status(KEY)["capacity"] > 0)  # probed
            async with client_for(served.serving) as client:
                client.headers["host"] = "hello"
                yield Chain(user, proxy, activator, client, qp_address, exporter, providers)
        finally:
            await activator.stop(grace=1.0)
            await proxy._close_servers(0.0)
            for provider in providers:
                provider.shutdown()
